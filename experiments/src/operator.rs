//! What a fleet operator does against a live fleet over MQTT: start a staged model rollout
//! (the coordinator carries it out), follow it, abort it, read where it stands.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lydlr_bus::messages::{
    JsonMessage, ModelCommand, NodeRolloutState, RolloutCommand, RolloutPhase, RolloutRequest,
    RolloutState,
};
use lydlr_bus::{BrokerUrl, BusClient, BusMessage, ClientOptions, Topic};
use tokio::sync::mpsc::UnboundedReceiver;

/// How long the coordinator has to acknowledge a rollout (publish its first state).
const ACKNOWLEDGE: Duration = Duration::from_secs(10);

/// A rollout request for the package in `dir` (verified here first: a package the nodes would
/// refuse is not sent). `id` defaults to one made of the version and the time.
pub fn rollout_request(dir: &Path, id: Option<String>) -> anyhow::Result<RolloutRequest> {
    let (package, files) = lydlr_learn::package::package_files(dir)
        .with_context(|| format!("model package {}", dir.display()))?;
    let version = package.manifest.version.clone();
    let id = id.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("{}-{secs}", version.replace('.', "-"))
    });
    let ModelCommand::Deploy { files, .. } = ModelCommand::deploy_files(
        &version,
        files.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
    ) else {
        unreachable!("deploy_files builds a deploy")
    };
    Ok(RolloutRequest {
        files,
        ..RolloutRequest::new(&id, &version)
    })
}

async fn connect(url: &BrokerUrl) -> anyhow::Result<(BusClient, UnboundedReceiver<BusMessage>)> {
    let (client, rx) = BusClient::connect(
        url,
        ClientOptions::new(format!("lydlr-operator-{}", std::process::id())),
    );
    client.subscribe(Topic::RolloutState.to_string()).await?;
    Ok((client, rx))
}

fn rollout_state(message: &BusMessage) -> Option<RolloutState> {
    match Topic::parse(&message.topic) {
        Ok(Topic::RolloutState) => RolloutState::from_json(&message.payload).ok(),
        _ => None,
    }
}

/// Sends the rollout to the coordinator and, with `follow`, prints every move until it ends
/// (or `timeout`); returns its last state.
pub async fn start_rollout(
    url: &BrokerUrl,
    request: RolloutRequest,
    follow: bool,
    timeout: Duration,
) -> anyhow::Result<RolloutState> {
    request.validate()?;
    let (client, mut rx) = connect(url).await?;
    let id = request.id.clone();
    client
        .publish(
            Topic::RolloutCommand.to_string(),
            RolloutCommand::Start(request).to_json(),
            false,
        )
        .await?;
    let started = Instant::now();
    let mut last: Option<RolloutState> = None;
    loop {
        let wait = if last.is_none() {
            ACKNOWLEDGE
        } else {
            timeout.saturating_sub(started.elapsed())
        };
        let message = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) => bail!("the broker connection closed"),
            Err(_) if last.is_none() => bail!(
                "no coordinator took rollout {id} within {ACKNOWLEDGE:?}: is one running, \
                 or is another rollout still running (lydlr rollout status)?"
            ),
            Err(_) => {
                eprintln!(
                    "rollout {id} still running after {:.0} s; the coordinator carries on \
                     (lydlr rollout status)",
                    started.elapsed().as_secs_f64()
                );
                break;
            }
        };
        let Some(state) = rollout_state(&message).filter(|s| s.id == id) else {
            continue;
        };
        if follow && last.as_ref() != Some(&state) {
            println!(
                "{:6.1} s  {}",
                started.elapsed().as_secs_f64(),
                summary(&state)
            );
        }
        let ended = state.phase != RolloutPhase::Running;
        last = Some(state);
        if ended || !follow {
            break;
        }
    }
    client.disconnect().await?;
    last.context("no rollout state")
}

/// Orders the running rollout stopped and every node it reached rolled back.
pub async fn abort_rollout(url: &BrokerUrl, reason: Option<String>) -> anyhow::Result<()> {
    let (client, _rx) = connect(url).await?;
    client
        .publish(
            Topic::RolloutCommand.to_string(),
            RolloutCommand::Abort { reason }.to_json(),
            false,
        )
        .await?;
    client.disconnect().await?;
    Ok(())
}

/// The coordinator's retained rollout state, if it ever published one.
pub async fn rollout_status(url: &BrokerUrl) -> anyhow::Result<Option<RolloutState>> {
    let (client, mut rx) = connect(url).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut state = None;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if let Some(s) = rollout_state(&message) {
            state = Some(s);
            break;
        }
    }
    client.disconnect().await?;
    Ok(state)
}

/// One line: the phase, the wave, how many nodes stand where.
pub fn summary(state: &RolloutState) -> String {
    let count = |wanted: NodeRolloutState| state.nodes.iter().filter(|n| n.state == wanted).count();
    let mut line = format!(
        "rollout {} of {}: {:?}, wave {}/{}",
        state.id,
        state.version,
        state.phase,
        state.wave.min(state.waves.saturating_sub(1)),
        state.waves.saturating_sub(1)
    );
    for (label, wanted) in [
        ("healthy", NodeRolloutState::Healthy),
        ("active", NodeRolloutState::Active),
        ("deploying", NodeRolloutState::Deploying),
        ("waiting", NodeRolloutState::Waiting),
        ("skipped", NodeRolloutState::Skipped),
        ("failed", NodeRolloutState::Failed),
        ("rolling back", NodeRolloutState::RollingBack),
        ("rolled back", NodeRolloutState::RolledBack),
    ] {
        let n = count(wanted);
        if n > 0 {
            line.push_str(&format!(", {n} {label}"));
        }
    }
    if !state.reason.is_empty() {
        line.push_str(&format!(" — {}", state.reason));
    }
    line
}

/// Writes a new operator key pair: `<prefix>.key` (secret, hex, readable by its owner only)
/// and `<prefix>.pub` (public, hex: what nodes list in `model_keys`). Refuses to overwrite.
pub fn keygen(prefix: &Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let secret_path = prefix.with_extension("key");
    let public_path = prefix.with_extension("pub");
    for path in [&secret_path, &public_path] {
        if path.exists() {
            bail!("{} exists: not overwriting a key", path.display());
        }
    }
    let (secret, public) = lydlr_edge::signing::generate_key_pair()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(
        &mut options
            .open(&secret_path)
            .with_context(|| format!("creating {}", secret_path.display()))?,
        format!("{secret}\n").as_bytes(),
    )?;
    std::fs::write(&public_path, format!("{public}\n"))
        .with_context(|| format!("writing {}", public_path.display()))?;
    Ok((secret_path, public_path))
}

fn read_secret(key: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    lydlr_edge::signing::hex_bytes::<32>(&text)
        .with_context(|| format!("{} is not a secret key (64 hex digits)", key.display()))
}

/// Signs a model package folder (writes `manifest.sig` over its `manifest.toml`, after
/// verifying the package) or a script (writes `<script>.sig`). Returns the file written.
pub fn sign(key: &Path, target: &Path) -> anyhow::Result<std::path::PathBuf> {
    use lydlr_codec::neural::package::{MANIFEST_FILE, SIGNATURE_FILE};
    let secret = read_secret(key)?;
    let (message, out) = if target.is_dir() {
        lydlr_learn::package::read_package(target)
            .with_context(|| format!("model package {}", target.display()))?;
        let manifest = target.join(MANIFEST_FILE);
        (std::fs::read(&manifest)?, target.join(SIGNATURE_FILE))
    } else {
        let mut out = target.as_os_str().to_owned();
        out.push(lydlr_edge::scripts::SIGNATURE_SUFFIX);
        let source =
            std::fs::read(target).with_context(|| format!("reading {}", target.display()))?;
        (source, std::path::PathBuf::from(out))
    };
    let signature = lydlr_edge::signing::sign(&message, &secret);
    std::fs::write(&out, signature).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// A script load for `node`'s `.../script/load`: the file's source and, when `<file>.sig`
/// sits beside it, its signature.
pub fn script_load(path: &Path) -> anyhow::Result<lydlr_bus::messages::ScriptLoad> {
    let source =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut signature_path = path.as_os_str().to_owned();
    signature_path.push(lydlr_edge::scripts::SIGNATURE_SUFFIX);
    let signature = std::fs::read(&signature_path)
        .ok()
        .map(|bytes| lydlr_edge::signing::to_hex(&bytes));
    Ok(lydlr_bus::messages::ScriptLoad {
        name: path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("script")
            .to_owned(),
        order: 0,
        source: Some(source),
        signature,
    })
}
