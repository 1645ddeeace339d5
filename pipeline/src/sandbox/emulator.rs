//! The sandbox's two servers: the AWS API emulator (the moto server, from a venv the sandbox
//! keeps) and a Docker registry for the images (Debian's `docker-registry`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::SandboxError;
use super::process::{self, Process};

/// What the sandbox's venv installs: the moto version shipit's own tests run against.
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";
/// Written into the venv once the install succeeded, holding [`MOTO_REQUIREMENT`]: a venv
/// without it (an install that was interrupted) or with another text is installed again.
const VENV_STAMP: &str = ".shipit-sandbox-requirement";
/// What the moto server prints once it listens, before its port.
const MOTO_LISTENING: &str = "Running on http://127.0.0.1:";
/// The registry programs looked for on `PATH`: Debian's name, then the upstream one.
const REGISTRY_PROGRAMS: &[&str] = &["docker-registry", "registry"];

/// The moto server to run: `given` (`--moto-server`), else the one in the sandbox's venv
/// `venv`, installed from PyPI first when it is missing. `progress` is told before a
/// (slow) install.
pub fn moto_server(
    given: Option<&Path>,
    venv: &Path,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, SandboxError> {
    if let Some(path) = given {
        if !path.is_file() {
            return Err(SandboxError::Missing {
                what: format!("the moto server {}", path.display()),
                hint: "pass the path of an installed moto_server (pip install 'moto[server]'), \
                       or leave --moto-server out to let the sandbox install one"
                    .into(),
            });
        }
        return Ok(path.to_path_buf());
    }
    let server = venv.join("bin/moto_server");
    let stamp = venv.join(VENV_STAMP);
    let installed = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == MOTO_REQUIREMENT);
    if installed && server.is_file() {
        return Ok(server);
    }
    progress(&format!(
        "installing {MOTO_REQUIREMENT} into {} (once; it needs PyPI)",
        venv.display()
    ));
    if !venv.join("bin/python").is_file() {
        run_step(
            Command::new("python3").arg("-m").arg("venv").arg(venv),
            "python3 -m venv",
            "install Python 3 and its venv module (Debian: apt-get install python3-venv)",
        )?;
    }
    run_step(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--only-binary",
                ":all:",
            ])
            .arg(MOTO_REQUIREMENT),
        "pip install",
        "check that PyPI is reachable; or install moto yourself and pass --moto-server, or run \
         an emulator and pass --endpoint",
    )?;
    if !server.is_file() {
        return Err(SandboxError::Missing {
            what: format!("the moto server {} after installing it", server.display()),
            hint: format!(
                "remove {} and run `shipit sandbox up` again",
                venv.display()
            ),
        });
    }
    std::fs::write(&stamp, format!("{MOTO_REQUIREMENT}\n")).map_err(|source| SandboxError::Io {
        action: format!("write {}", stamp.display()),
        source,
    })?;
    Ok(server)
}

/// Runs one install step, failing with its last output lines.
fn run_step(command: &mut Command, what: &str, hint: &str) -> Result<(), SandboxError> {
    let out = command.output().map_err(|source| SandboxError::Spawn {
        what: what.to_string(),
        program: PathBuf::from(command.get_program()),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(SandboxError::Install {
        what: what.to_string(),
        status: out.status.to_string(),
        output: lines[lines.len().saturating_sub(10)..].join("\n"),
        hint: hint.to_string(),
    })
}

/// Starts the moto server on a port of 127.0.0.1 it picks itself (no other program can take
/// the port between a pick and the bind), its output in `log`; the process and its port.
pub fn start_moto(server: &Path, log: &Path) -> Result<(Process, u16), SandboxError> {
    let what = "the AWS emulator (moto)";
    let from = std::fs::metadata(log).map_or(0, |m| m.len());
    let moto = process::spawn(
        what,
        server,
        &["-H".into(), "127.0.0.1".into(), "-p".into(), "0".into()],
        &[],
        log,
    )?;
    let deadline = std::time::Instant::now() + process::START_TIMEOUT;
    let port = loop {
        let text = std::fs::read(log).unwrap_or_default();
        let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
        let found = text.find(MOTO_LISTENING).and_then(|at| {
            let digits: String = text[at + MOTO_LISTENING.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u16>().ok()
        });
        if let Some(port) = found {
            break port;
        }
        if !moto.alive() || std::time::Instant::now() >= deadline {
            let _ = moto.stop();
            return Err(SandboxError::Died {
                what: what.into(),
                log: log.to_path_buf(),
                tail: process::log_tail(log),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if let Err(e) = process::wait_listening(&moto, what, &[port]) {
        let _ = moto.stop();
        return Err(e);
    }
    Ok((moto, port))
}

/// The registry program on `PATH`.
pub fn registry_program() -> Result<PathBuf, SandboxError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in REGISTRY_PROGRAMS {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(SandboxError::Missing {
        what: "a Docker registry program (docker-registry or registry on PATH)".into(),
        hint: "install it (Debian: apt-get install docker-registry); the sandbox runs it on \
               127.0.0.1 for the images a release pushes"
            .into(),
    })
}

/// Starts the registry on `port` of 127.0.0.1, storing images under `dir/registry` and
/// logging to `dir/registry.log`.
pub fn start_registry(program: &Path, dir: &Path, port: u16) -> Result<Process, SandboxError> {
    let storage = dir.join("registry");
    let config = dir.join("registry.yml");
    // Only the sandbox's own files: the package's /etc/docker/registry/config.yml is not read.
    let text = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
         delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: shipit-sandbox\n",
        storage.display()
    );
    std::fs::write(&config, text).map_err(|source| SandboxError::Io {
        action: format!("write {}", config.display()),
        source,
    })?;
    process::start(
        "the image registry",
        program,
        &["serve".into(), config.display().to_string()],
        &[],
        &dir.join("registry.log"),
        port,
    )
}
