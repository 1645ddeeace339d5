#!/usr/bin/env bash
# Creates what an `ecs` target of shipit needs on any AWS-compatible endpoint (the moto server,
# LocalStack with the services it has, or real AWS), then prints a ready `[targets.<prefix>]`
# block for shipit.toml on stdout. Progress goes to stderr.
#
#   AWS_ENDPOINT_URL=http://127.0.0.1:5000 bash localstack/bootstrap.sh demo >> shipit.toml
#   bash localstack/bootstrap.sh demo hello     # second argument: the service (ECR repository)
#
# It creates, each named after the prefix: a VPC with two subnets in two availability zones, a
# security group for the tasks, an application load balancer, two target groups (blue, green;
# target type ip, port 8080), a production listener on port 80 forwarding to blue (a listener
# needs a default action; shipit moves it to the slot it releases), a test listener on port
# 8080 forwarding to green (shipit points it at the idle slot to preview a candidate), an ECS
# cluster and an ECR repository `<prefix>/<service>`. Run it again with the same prefix and it
# finds what exists instead of creating it twice.
#
# Needs the aws CLI (v1 or v2) on PATH; credentials and region come from the usual AWS
# environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION or AWS_DEFAULT_REGION, which
# defaults to us-east-1 here), and AWS_ENDPOINT_URL points every call at an emulator.
set -euo pipefail

usage() {
  echo "usage: bash localstack/bootstrap.sh <prefix> [service]" >&2
  echo "  prefix: 1-20 lowercase letters, digits or '-', starting with a letter (names every resource)" >&2
  echo "  service: the service whose image repository to create (default: hello)" >&2
}

prefix=${1:-}
service=${2:-hello}
if [ -z "$prefix" ] || [ "$#" -gt 2 ]; then
  usage
  exit 2
fi
# Load balancer and target group names are at most 32 characters: "<prefix>-green" must fit.
if ! [[ "$prefix" =~ ^[a-z][a-z0-9-]{0,19}$ ]] || [[ "$prefix" == *- ]]; then
  echo "error: invalid prefix '$prefix'" >&2
  usage
  exit 2
fi
if ! [[ "$service" =~ ^[a-z0-9][a-z0-9._-]*$ ]]; then
  echo "error: invalid service name '$service': lowercase letters, digits, '.', '_' and '-'" >&2
  exit 2
fi
if ! command -v aws >/dev/null 2>&1; then
  echo "error: the aws CLI is not on PATH" >&2
  echo "hint: pip install awscli (the test suite has it in .venv/bin)" >&2
  exit 1
fi

region=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
export AWS_DEFAULT_REGION=$region AWS_REGION=$region
export AWS_PAGER=""
endpoint=${AWS_ENDPOINT_URL:-}

say() { printf 'bootstrap: %s\n' "$*" >&2; }

# aws <args> with --output text; an empty answer or "None" becomes "".
awstext() {
  local out
  out=$(aws --output text "$@")
  [ "$out" = "None" ] && out=""
  printf '%s' "$out"
}

say "prefix $prefix, region $region, endpoint ${endpoint:-(the AWS default)}"

# --- network -------------------------------------------------------------------------------
vpc=$(awstext ec2 describe-vpcs --filters "Name=tag:Name,Values=$prefix-vpc" --query 'Vpcs[0].VpcId')
if [ -z "$vpc" ]; then
  vpc=$(awstext ec2 create-vpc --cidr-block 10.0.0.0/16 --query 'Vpc.VpcId')
  aws ec2 create-tags --resources "$vpc" --tags "Key=Name,Value=$prefix-vpc"
  say "created VPC $vpc"
else
  say "found VPC $vpc"
fi

read -r -a zones <<<"$(awstext ec2 describe-availability-zones --query 'AvailabilityZones[0:2].ZoneName')"
if [ "${#zones[@]}" -lt 2 ]; then
  echo "error: region $region lists fewer than two availability zones (${zones[*]:-none}); an ALB needs two" >&2
  exit 1
fi

subnets=()
for i in 0 1; do
  name="$prefix-subnet-$((i + 1))"
  subnet=$(awstext ec2 describe-subnets --filters "Name=tag:Name,Values=$name" "Name=vpc-id,Values=$vpc" \
    --query 'Subnets[0].SubnetId')
  if [ -z "$subnet" ]; then
    subnet=$(awstext ec2 create-subnet --vpc-id "$vpc" --cidr-block "10.0.$((i + 1)).0/24" \
      --availability-zone "${zones[$i]}" --query 'Subnet.SubnetId')
    aws ec2 create-tags --resources "$subnet" --tags "Key=Name,Value=$name"
    say "created subnet $subnet in ${zones[$i]}"
  else
    say "found subnet $subnet"
  fi
  subnets+=("$subnet")
done

sg=$(awstext ec2 describe-security-groups \
  --filters "Name=group-name,Values=$prefix-tasks" "Name=vpc-id,Values=$vpc" --query 'SecurityGroups[0].GroupId')
if [ -z "$sg" ]; then
  sg=$(awstext ec2 create-security-group --group-name "$prefix-tasks" \
    --description "shipit $prefix: the service's tasks" --vpc-id "$vpc" --query 'GroupId')
  say "created security group $sg"
else
  say "found security group $sg"
fi

# --- load balancer -------------------------------------------------------------------------
lb=$(awstext elbv2 describe-load-balancers --query "LoadBalancers[?LoadBalancerName=='$prefix-alb'].LoadBalancerArn | [0]")
if [ -z "$lb" ]; then
  lb=$(awstext elbv2 create-load-balancer --name "$prefix-alb" --type application --scheme internet-facing \
    --subnets "${subnets[@]}" --security-groups "$sg" --query 'LoadBalancers[0].LoadBalancerArn')
  say "created load balancer $lb"
else
  say "found load balancer $lb"
fi

declare -A tg
for slot in blue green; do
  arn=$(awstext elbv2 describe-target-groups --query "TargetGroups[?TargetGroupName=='$prefix-$slot'].TargetGroupArn | [0]")
  if [ -z "$arn" ]; then
    arn=$(awstext elbv2 create-target-group --name "$prefix-$slot" --protocol HTTP --port 8080 \
      --vpc-id "$vpc" --target-type ip --health-check-path /healthz \
      --query 'TargetGroups[0].TargetGroupArn')
    say "created target group $arn"
  else
    say "found target group $arn"
  fi
  tg[$slot]=$arn
done

# listener <port> <slot>: the listener on that port, created forwarding to that slot's group.
listener() {
  local port=$1 slot=$2 arn
  arn=$(awstext elbv2 describe-listeners --load-balancer-arn "$lb" \
    --query "Listeners[?Port==\`$port\`].ListenerArn | [0]")
  if [ -z "$arn" ]; then
    arn=$(awstext elbv2 create-listener --load-balancer-arn "$lb" --protocol HTTP --port "$port" \
      --default-actions "Type=forward,TargetGroupArn=${tg[$slot]}" --query 'Listeners[0].ListenerArn')
    say "created listener $arn (port $port, forwarding to $slot)"
  else
    say "found listener $arn (port $port)"
  fi
  printf '%s' "$arn"
}
production=$(listener 80 blue)
test_listener=$(listener 8080 green)

# --- cluster and repository ----------------------------------------------------------------
cluster=$(awstext ecs describe-clusters --clusters "$prefix" --query "clusters[?status=='ACTIVE'].clusterName | [0]")
if [ -z "$cluster" ]; then
  cluster=$(awstext ecs create-cluster --cluster-name "$prefix" --query 'cluster.clusterName')
  say "created ECS cluster $cluster"
else
  say "found ECS cluster $cluster"
fi

repo_name="$prefix/$service"
repository=$(awstext ecr describe-repositories --query "repositories[?repositoryName=='$repo_name'].repositoryUri | [0]")
if [ -z "$repository" ]; then
  repository=$(awstext ecr create-repository --repository-name "$repo_name" --query 'repository.repositoryUri')
  say "created ECR repository $repository"
else
  say "found ECR repository $repository"
fi

# --- the config block ----------------------------------------------------------------------
cat <<EOF

# Created by localstack/bootstrap.sh $prefix${endpoint:+ against $endpoint}.
[targets.$prefix]
kind = "ecs"
region = "$region"
cluster = "$cluster"
listener_arn = "$production"
test_listener_arn = "$test_listener"
target_groups = { blue = "${tg[blue]}", green = "${tg[green]}" }
subnets = ["${subnets[0]}", "${subnets[1]}"]
security_groups = ["$sg"]
repository = "$repository"
EOF
