//! Scenario files from untrusted text: each parses into a scenario that passes validation
//! and survives its own TOML echo, or is refused with an error naming the file; nothing
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lydlr_experiments::Scenario;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Scenario::parse(text, "fuzz.toml") {
        Ok(scenario) => {
            let echo = toml::to_string(&scenario).expect("a parsed scenario serialises");
            Scenario::parse(&echo, "echo.toml").expect("a scenario's echo parses again");
        }
        Err(e) => assert!(e.to_string().contains("fuzz.toml")),
    }
});
