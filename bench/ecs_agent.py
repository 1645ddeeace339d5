"""The ECS agent moto lacks, for bench/ecs_overhead.sh: keeps as many targets registered in
each slot's target group as its service's desired count (none when 0), as ECS would.
moto reports registered targets healthy at once. Runs until killed, polling every 100 ms.

    python bench/ecs_agent.py <cluster> <service-blue> <service-green> <tg-blue> <tg-green>
"""
import sys
import time

import boto3


def main() -> None:
    cluster, blue, green, tg_blue, tg_green = sys.argv[1:6]
    ecs = boto3.client("ecs")
    elb = boto3.client("elbv2")
    slots = [(blue, tg_blue, 1), (green, tg_green, 2)]
    deadline = time.monotonic() + 3 * 3600
    while time.monotonic() < deadline:
        described = ecs.describe_services(cluster=cluster, services=[blue, green])
        by_name = {s["serviceName"]: s for s in described.get("services", [])}
        for name, group, octet in slots:
            service = by_name.get(name)
            if service is None:
                continue
            desired = service["desiredCount"] if service.get("status") == "ACTIVE" else 0
            wanted = {f"10.250.{octet}.{10 + i}" for i in range(desired)}
            health = elb.describe_target_health(TargetGroupArn=group)
            present = {d["Target"]["Id"] for d in health["TargetHealthDescriptions"]}
            missing = sorted(wanted - present)
            extra = sorted(present - wanted)
            if missing:
                elb.register_targets(
                    TargetGroupArn=group, Targets=[{"Id": i, "Port": 8080} for i in missing]
                )
            if extra:
                elb.deregister_targets(
                    TargetGroupArn=group, Targets=[{"Id": i, "Port": 8080} for i in extra]
                )
        time.sleep(0.1)


if __name__ == "__main__":
    main()
