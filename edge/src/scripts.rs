//! User scripts (Rhai) on every frame and every metrics report, sandboxed.
//!
//! Hooks: `fn on_frame(frame)` gets `#{stream, t, values}` and returns it (changed or not),
//! or `()` to drop the frame; setting `frame.boost_s = S` raises the stream to lossless for S
//! seconds. `fn on_metrics(m)` returns a map of fields to add to the node's metrics. `this`
//! is the script's own state, kept between calls. Scripts run in their declared order.
//!
//! Sandbox: Rhai has no file, network or process access; each call is limited in operations,
//! call depth, string, array and map sizes, and wall time. A script that fails or runs over
//! its budget is disabled and reported; the frame goes on as it was, and the node goes on
//! compressing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use lydlr_bus::messages::ScriptStatus;
use lydlr_codec::Frame;
use rhai::{AST, CallFnOptions, Dynamic, Engine, Map, Scope};

/// Limits every call runs under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScriptLimits {
    pub max_operations: u64,
    pub max_call_depth: usize,
    pub max_string: usize,
    pub max_array: usize,
    pub time_budget: Duration,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        Self {
            max_operations: 200_000,
            max_call_depth: 32,
            max_string: 4096,
            max_array: 10_000,
            time_budget: Duration::from_millis(5),
        }
    }
}

struct Loaded {
    name: String,
    order: i64,
    ast: AST,
    state: Dynamic,
    on_frame: bool,
    on_metrics: bool,
    status: ScriptStatus,
}

/// What the scripts did to a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameVerdict {
    Keep { frame: Frame, boost_s: f64 },
    Drop,
}

pub struct ScriptHost {
    engine: Engine,
    deadline: Arc<AtomicU64>,
    epoch: Instant,
    limits: ScriptLimits,
    scripts: Vec<Loaded>,
    /// Scripts refused at load time (they compile or run their top level badly).
    refused: Vec<ScriptStatus>,
    /// Each script loaded from a folder, by folder and name: its order, source and signature.
    from_dir: std::collections::BTreeMap<(std::path::PathBuf, String), FolderScript>,
    /// The operator's keys; when any is set, only scripts one of them signed are loaded.
    keys: Vec<ed25519_dalek::VerifyingKey>,
}

type FolderScript = (i64, String, Option<Vec<u8>>);

/// A script file's signature sits beside it: `name.rhai.sig`, 64 raw bytes.
pub const SIGNATURE_SUFFIX: &str = ".sig";

impl ScriptHost {
    pub fn new(limits: ScriptLimits) -> Self {
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_depth)
            .set_max_string_size(limits.max_string)
            .set_max_array_size(limits.max_array)
            .set_max_map_size(limits.max_array)
            .set_max_expr_depths(64, 32);
        engine.on_print(|text| tracing::info!(target: "lydlr_edge::script", "{text}"));
        engine.on_debug(|text, _, _| tracing::debug!(target: "lydlr_edge::script", "{text}"));
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let epoch = Instant::now();
        let watch = deadline.clone();
        engine.on_progress(move |_| {
            let now = epoch.elapsed().as_nanos() as u64;
            (now > watch.load(Ordering::Relaxed)).then(|| Dynamic::from("time budget exceeded"))
        });
        Self {
            engine,
            deadline,
            epoch,
            limits,
            scripts: Vec::new(),
            refused: Vec::new(),
            from_dir: std::collections::BTreeMap::new(),
            keys: Vec::new(),
        }
    }

    /// From now on, only scripts signed by one of `keys` are loaded (none: any script).
    pub fn require_signatures(&mut self, keys: Vec<ed25519_dalek::VerifyingKey>) {
        self.keys = keys;
    }

    /// [`ScriptHost::load`], after checking the source's signature when keys are configured.
    pub fn load_signed(
        &mut self,
        name: &str,
        order: i64,
        source: &str,
        signature: Option<&[u8]>,
    ) -> Result<(), String> {
        if !self.keys.is_empty() {
            let checked = match signature {
                Some(signature) => crate::signing::verify(source.as_bytes(), signature, &self.keys)
                    .map_err(|e| format!("script signature: {e}")),
                None => Err("unsigned script: this node requires the operator's signature".into()),
            };
            if let Err(error) = checked {
                self.unload(name);
                self.refuse(name, error.clone());
                return Err(error);
            }
        }
        self.load(name, order, source)
    }

    /// What an operator signs to remove a script: `unload:<name>`.
    pub fn unload_message(name: &str) -> Vec<u8> {
        format!("unload:{name}").into_bytes()
    }

    /// [`ScriptHost::unload`], after checking the signature over
    /// [`ScriptHost::unload_message`] when keys are configured.
    pub fn unload_signed(&mut self, name: &str, signature: Option<&[u8]>) -> Result<(), String> {
        if !self.keys.is_empty() {
            let signature =
                signature.ok_or("unsigned unload: this node requires the operator's signature")?;
            crate::signing::verify(&Self::unload_message(name), signature, &self.keys)
                .map_err(|e| format!("unload signature: {e}"))?;
        }
        self.unload(name);
        Ok(())
    }

    fn refuse(&mut self, name: &str, error: String) {
        self.refused.retain(|s| s.name != name);
        self.refused.push(ScriptStatus {
            name: name.to_owned(),
            enabled: false,
            calls: 0,
            time_us: 0.0,
            error: Some(error),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }

    fn arm(&self) {
        arm(&self.deadline, self.epoch, self.limits.time_budget);
    }

    /// Compiles and installs a script (replacing one of the same name); runs its top level
    /// once under the limits. Errors are also kept for the status report.
    pub fn load(&mut self, name: &str, order: i64, source: &str) -> Result<(), String> {
        self.unload(name);
        self.refused.retain(|s| s.name != name);
        let result = self
            .engine
            .compile(source)
            .map_err(|e| e.to_string())
            .and_then(|ast| {
                self.arm();
                self.engine
                    .run_ast_with_scope(&mut Scope::new(), &ast)
                    .map_err(|e| e.to_string())?;
                Ok(ast)
            });
        let ast = match result {
            Ok(ast) => ast,
            Err(error) => {
                self.refuse(name, error.clone());
                return Err(error);
            }
        };
        let has = |f: &str, arity: usize| {
            ast.iter_functions()
                .any(|m| m.name == f && m.params.len() == arity)
        };
        let loaded = Loaded {
            name: name.to_owned(),
            order,
            on_frame: has("on_frame", 1),
            on_metrics: has("on_metrics", 1),
            ast,
            state: Dynamic::from_map(Map::new()),
            status: ScriptStatus {
                name: name.to_owned(),
                enabled: true,
                calls: 0,
                time_us: 0.0,
                error: None,
            },
        };
        self.scripts.push(loaded);
        self.scripts
            .sort_by(|a, b| a.order.cmp(&b.order).then(a.name.cmp(&b.name)));
        Ok(())
    }

    pub fn unload(&mut self, name: &str) {
        self.scripts.retain(|s| s.name != name);
    }

    /// Brings the scripts loaded from a folder in line with its `*.rhai` files, run in
    /// file-name order (`10-lowpass.rhai` first): new or changed files are (re)loaded, removed
    /// ones unloaded, unchanged ones keep running with their state. Returns the refusals.
    pub fn load_dir(&mut self, dir: &std::path::Path) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return errors;
        };
        let mut files: Vec<std::path::PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .collect();
        files.sort();
        let mut present = std::collections::BTreeSet::new();
        for (i, path) in files.iter().enumerate() {
            let name = path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            present.insert(name.clone());
            let source = match std::fs::read_to_string(path) {
                Ok(source) => source,
                Err(e) => {
                    errors.push((name, e.to_string()));
                    continue;
                }
            };
            let mut signature_path = path.clone().into_os_string();
            signature_path.push(SIGNATURE_SUFFIX);
            let signature = std::fs::read(&signature_path).ok();
            let loaded_from = (i as i64, source, signature);
            let key = (dir.to_path_buf(), name);
            if self.from_dir.get(&key) == Some(&loaded_from) {
                continue;
            }
            if let Err(e) = self.load_signed(
                &key.1,
                loaded_from.0,
                &loaded_from.1,
                loaded_from.2.as_deref(),
            ) {
                errors.push((key.1.clone(), e));
            }
            self.from_dir.insert(key, loaded_from);
        }
        let removed: Vec<(std::path::PathBuf, String)> = self
            .from_dir
            .keys()
            .filter(|(folder, name)| folder == dir && !present.contains(name))
            .cloned()
            .collect();
        for key in removed {
            self.unload(&key.1);
            self.from_dir.remove(&key);
        }
        errors
    }

    /// Runs one hook of one script; a failure disables the script.
    fn call(engine: &Engine, script: &mut Loaded, hook: &str, arg: Dynamic) -> Option<Dynamic> {
        let started = Instant::now();
        let options = CallFnOptions::new()
            .bind_this_ptr(&mut script.state)
            .eval_ast(false);
        let result = engine.call_fn_with_options::<Dynamic>(
            options,
            &mut Scope::new(),
            &script.ast,
            hook,
            (arg,),
        );
        script.status.calls += 1;
        script.status.time_us += started.elapsed().as_secs_f64() * 1e6;
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                let reason = match *e {
                    rhai::EvalAltResult::ErrorTerminated(ref token, _) => {
                        format!("stopped: {token}")
                    }
                    ref other => other.to_string(),
                };
                tracing::warn!(script = %script.name, "{hook} failed, script disabled: {reason}");
                script.status.enabled = false;
                script.status.error = Some(format!("{hook}: {reason}"));
                None
            }
        }
    }

    /// Passes a frame through every enabled `on_frame` hook.
    pub fn on_frame(&mut self, stream: &str, frame: Frame) -> FrameVerdict {
        let mut current = frame;
        let mut boost_s: f64 = 0.0;
        for script in self
            .scripts
            .iter_mut()
            .filter(|s| s.status.enabled && s.on_frame)
        {
            let mut map = Map::new();
            map.insert("stream".into(), stream.into());
            map.insert("t".into(), Dynamic::from_int(current.timestamp_ns));
            map.insert(
                "values".into(),
                Dynamic::from_array(
                    current
                        .values
                        .iter()
                        .map(|&v| Dynamic::from_float(v))
                        .collect(),
                ),
            );
            arm(&self.deadline, self.epoch, self.limits.time_budget);
            let Some(out) = Self::call(&self.engine, script, "on_frame", Dynamic::from_map(map))
            else {
                continue;
            };
            if out.is_unit() {
                return FrameVerdict::Drop;
            }
            match returned_frame(&out, current.values.len()) {
                Ok((t, values, boost)) => {
                    current = Frame::new(t, values);
                    boost_s = boost_s.max(boost);
                }
                Err(reason) => {
                    script.status.enabled = false;
                    script.status.error = Some(format!("on_frame: {reason}"));
                }
            }
        }
        FrameVerdict::Keep {
            frame: current,
            boost_s,
        }
    }

    /// Fields the `on_metrics` hooks add: numbers, booleans and strings.
    pub fn on_metrics(&mut self, t_stream_s: f64) -> serde_json::Map<String, serde_json::Value> {
        let mut extra = serde_json::Map::new();
        for script in self
            .scripts
            .iter_mut()
            .filter(|s| s.status.enabled && s.on_metrics)
        {
            let mut map = Map::new();
            map.insert("t_stream_s".into(), Dynamic::from_float(t_stream_s));
            arm(&self.deadline, self.epoch, self.limits.time_budget);
            let Some(out) = Self::call(&self.engine, script, "on_metrics", Dynamic::from_map(map))
            else {
                continue;
            };
            if let Some(fields) = out.try_cast::<Map>() {
                for (k, v) in fields {
                    let value = if let Ok(i) = v.as_int() {
                        serde_json::Value::from(i)
                    } else if let Ok(f) = v.as_float() {
                        serde_json::Value::from(f)
                    } else if let Ok(b) = v.as_bool() {
                        serde_json::Value::from(b)
                    } else {
                        serde_json::Value::from(v.to_string())
                    };
                    extra.insert(k.to_string(), value);
                }
            }
        }
        extra
    }

    pub fn status(&self) -> Vec<ScriptStatus> {
        self.scripts
            .iter()
            .map(|s| s.status.clone())
            .chain(self.refused.iter().cloned())
            .collect()
    }
}

/// Starts a call's time budget: the progress callback stops the script past this deadline.
fn arm(deadline: &AtomicU64, epoch: Instant, budget: Duration) {
    let now = epoch.elapsed().as_nanos() as u64;
    deadline.store(now + budget.as_nanos() as u64, Ordering::Relaxed);
}

/// Reads a frame map returned by a script; its shape must match the stream's.
fn returned_frame(value: &Dynamic, channels: usize) -> Result<(i64, Vec<f64>, f64), String> {
    let map = value
        .read_lock::<Map>()
        .ok_or("on_frame must return the frame map or ()")?;
    let t = map
        .get("t")
        .and_then(|t| t.as_int().ok())
        .ok_or("frame.t must stay an integer")?;
    let values = map
        .get("values")
        .and_then(|v| v.read_lock::<rhai::Array>().map(|a| a.clone()))
        .ok_or("frame.values must stay an array")?;
    if values.len() != channels {
        return Err(format!(
            "frame.values has {} values, the stream {channels}",
            values.len()
        ));
    }
    let values = values
        .iter()
        .map(|v| {
            v.as_float()
                .or_else(|_| v.as_int().map(|i| i as f64))
                .map_err(|_| "frame.values must be numbers".to_string())
        })
        .collect::<Result<Vec<f64>, String>>()?;
    let boost = map
        .get("boost_s")
        .and_then(|b| b.as_float().ok())
        .unwrap_or(0.0);
    Ok((
        t,
        values,
        if boost.is_finite() {
            boost.clamp(0.0, 60.0)
        } else {
            0.0
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t: i64, values: &[f64]) -> Frame {
        Frame::new(t, values.to_vec())
    }

    fn shipped(folder: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts")
            .join(folder)
    }

    #[test]
    fn the_example_scripts_filter_drop_and_boost() {
        let mut host = ScriptHost::new(ScriptLimits::default());
        assert!(host.load_dir(&shipped("filters")).is_empty());
        assert!(host.load_dir(&shipped("events")).is_empty());
        // Low-pass: the second frame moves 30 % of the way.
        host.on_frame("imu", frame(0, &[0.0, 0.0, 9.8, 0.0, 0.0, 0.0]));
        let FrameVerdict::Keep { frame: f, .. } =
            host.on_frame("imu", frame(5, &[10.0, 0.0, 9.8, 0.0, 0.0, 0.0]))
        else {
            panic!("dropped");
        };
        assert!((f.values[0] - 3.0).abs() < 1e-9, "{:?}", f.values);
        // Collision: a spike (after the filter) boosts.
        let mut boosted = false;
        for i in 0..20 {
            if let FrameVerdict::Keep { boost_s, .. } =
                host.on_frame("imu", frame(10 + i, &[40.0, 0.0, 9.8, 0.0, 0.0, 0.0]))
            {
                boosted |= boost_s > 0.0;
            }
        }
        assert!(boosted);
        // Deadband: an unchanged battery frame is dropped.
        assert!(matches!(
            host.on_frame("battery", frame(0, &[15.0, 1.0])),
            FrameVerdict::Keep { .. }
        ));
        assert_eq!(
            host.on_frame("battery", frame(1, &[15.001, 1.0])),
            FrameVerdict::Drop
        );
        let extra = host.on_metrics(1.0);
        assert_eq!(extra["deadband_dropped"], serde_json::json!(1));
        assert!(extra["collisions"].as_i64().unwrap() > 0);
        assert!(host.status().iter().all(|s| s.enabled));
    }

    #[test]
    fn a_runaway_script_is_stopped_and_disabled_and_frames_go_on() {
        let mut host = ScriptHost::new(ScriptLimits::default());
        host.load("spin", 0, "fn on_frame(frame) { loop { } }")
            .unwrap();
        host.load(
            "deep",
            1,
            "fn r(n) { r(n + 1) } fn on_frame(frame) { r(0) }",
        )
        .unwrap();
        host.load(
            "huge",
            2,
            r#"fn on_frame(frame) { let s = "x"; loop { s += s; } }"#,
        )
        .unwrap();
        host.load(
            "shape",
            3,
            "fn on_frame(frame) { frame.values = [1.0]; frame }",
        )
        .unwrap();
        let started = Instant::now();
        let verdict = host.on_frame("imu", frame(7, &[1.0, 2.0]));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            verdict,
            FrameVerdict::Keep {
                frame: frame(7, &[1.0, 2.0]),
                boost_s: 0.0
            }
        );
        let status = host.status();
        assert_eq!(status.len(), 4);
        assert!(
            status.iter().all(|s| !s.enabled && s.error.is_some()),
            "{status:?}"
        );
        // Disabled scripts are not called again.
        host.on_frame("imu", frame(8, &[1.0, 2.0]));
        assert!(host.status().iter().all(|s| s.calls == 1));
    }

    #[test]
    fn a_script_folder_is_followed_without_a_restart() {
        let dir = std::env::temp_dir().join(format!("lydlr-scripts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let scale = |k: f64| format!("fn on_frame(frame) {{ frame.values[0] *= {k:?}; frame }}");
        let first = |host: &mut ScriptHost| match host.on_frame("imu", frame(0, &[1.0])) {
            FrameVerdict::Keep { frame, .. } => Some(frame.values[0]),
            FrameVerdict::Drop => None,
        };
        let mut host = ScriptHost::new(ScriptLimits::default());
        std::fs::write(dir.join("10-scale.rhai"), scale(2.0)).unwrap();
        assert!(host.load_dir(&dir).is_empty());
        assert_eq!(first(&mut host), Some(2.0));
        std::fs::write(dir.join("10-scale.rhai"), scale(3.0)).unwrap();
        std::fs::write(dir.join("20-drop.rhai"), "fn on_frame(frame) { () }").unwrap();
        assert!(host.load_dir(&dir).is_empty());
        assert_eq!(first(&mut host), None);
        assert_eq!(host.status().len(), 2);
        std::fs::remove_file(dir.join("20-drop.rhai")).unwrap();
        host.load_dir(&dir);
        assert_eq!(first(&mut host), Some(3.0));
        // Unchanged files are not loaded again: a script's calls keep counting.
        let calls = host.status()[0].calls;
        host.load_dir(&dir);
        assert_eq!(host.status()[0].calls, calls);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_script_that_does_not_compile_is_refused_with_its_error() {
        let mut host = ScriptHost::new(ScriptLimits::default());
        let err = host
            .load("broken", 0, "fn on_frame(frame { frame }")
            .unwrap_err();
        assert!(!err.is_empty());
        assert_eq!(host.status()[0].error.as_deref(), Some(err.as_str()));
        assert!(host.is_empty());
        // A top level that never ends is refused too.
        assert!(host.load("forever", 0, "loop { }").is_err());
    }

    #[test]
    fn with_keys_only_scripts_the_operator_signed_load_and_unload() {
        let secret = [7u8; 32];
        let public = ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key();
        let mut host = ScriptHost::new(ScriptLimits::default());
        host.require_signatures(vec![public]);
        let source = "fn on_frame(frame) { frame }";
        let signature = crate::signing::sign(source.as_bytes(), &secret);
        let forged = crate::signing::sign(source.as_bytes(), &[8u8; 32]);
        let unsigned = host.load_signed("pass", 0, source, None).unwrap_err();
        assert!(unsigned.contains("unsigned"), "{unsigned}");
        assert!(host.load_signed("pass", 0, source, Some(&forged)).is_err());
        let altered = "fn on_frame(frame) { () }";
        assert!(
            host.load_signed("pass", 0, altered, Some(&signature))
                .is_err()
        );
        assert!(host.is_empty());
        // Refusals are reported with their reason.
        let refused = host.status();
        assert!(
            refused
                .iter()
                .any(|s| s.name == "pass" && !s.enabled && s.error.is_some())
        );
        host.load_signed("pass", 0, source, Some(&signature))
            .unwrap();
        assert!(!host.is_empty());
        // Removing one needs a signature too.
        assert!(host.unload_signed("pass", None).is_err());
        assert!(!host.is_empty());
        let unload = crate::signing::sign(&ScriptHost::unload_message("pass"), &secret);
        host.unload_signed("pass", Some(&unload)).unwrap();
        assert!(host.is_empty());

        // A folder's scripts need their `.sig` files.
        let dir = std::env::temp_dir().join(format!("lydlr-signed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pass.rhai"), source).unwrap();
        let errors = host.load_dir(&dir);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(host.is_empty());
        std::fs::write(dir.join("pass.rhai.sig"), signature).unwrap();
        assert!(host.load_dir(&dir).is_empty());
        assert!(!host.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
