//! Scenario files from careless or hostile hands: every shipped scenario, mutated many ways
//! (bytes flipped, lines cut, values swapped for extremes), either parses into a scenario
//! that passes validation or is refused with an error that names the file; nothing panics.

use std::path::Path;

use lydlr_experiments::Scenario;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeded draws: the same mutations on every machine.
struct Draw(ChaCha8Rng);

impl Draw {
    fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n.max(1))
    }
}

const EXTREMES: [&str; 12] = [
    "0",
    "-1",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "18446744073709551616",
    "\"\"",
    "[]",
    "{}",
    "\"../../etc/passwd\"",
    "true",
];

fn mutate(text: &str, draw: &mut Draw) -> String {
    let mut bytes = text.as_bytes().to_vec();
    match draw.below(5) {
        0 => {
            // Flip a few bits.
            for _ in 0..1 + draw.below(4) {
                let i = draw.below(bytes.len());
                bytes[i] ^= 1 << draw.below(8);
            }
        }
        1 => bytes.truncate(draw.below(bytes.len())),
        2 => {
            // Drop a line.
            let lines: Vec<&str> = text.lines().collect();
            let skip = draw.below(lines.len());
            let kept: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l)
                .collect();
            return kept.join("\n");
        }
        3 => {
            // Replace a value with an extreme.
            let lines: Vec<String> = text
                .lines()
                .map(|line| match line.split_once(" = ") {
                    Some((key, _)) if draw.below(4) == 0 => {
                        format!("{key} = {}", EXTREMES[draw.below(EXTREMES.len())])
                    }
                    _ => line.to_owned(),
                })
                .collect();
            return lines.join("\n");
        }
        _ => {
            // Duplicate a line (a key set twice, a table opened twice).
            let lines: Vec<&str> = text.lines().collect();
            let copy = draw.below(lines.len());
            let mut out: Vec<&str> = lines.clone();
            out.insert(draw.below(out.len() + 1), lines[copy]);
            return out.join("\n");
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn mutated_scenarios_parse_or_are_refused_by_name_and_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7);
    let mut draw = Draw(ChaCha8Rng::seed_from_u64(7));
    let (mut accepted, mut refused) = (0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        Scenario::parse(&text, "original.toml").unwrap();
        for _ in 0..400 {
            let mutated = mutate(&text, &mut draw);
            match std::panic::catch_unwind(|| Scenario::parse(&mutated, "mutated.toml")) {
                Ok(Ok(scenario)) => {
                    accepted += 1;
                    // What parses is usable: it round-trips through its own TOML echo.
                    let echo = toml::to_string(&scenario).unwrap();
                    Scenario::parse(&echo, "echo.toml").unwrap();
                }
                Ok(Err(e)) => {
                    refused += 1;
                    assert!(e.to_string().contains("mutated.toml"), "{e}");
                }
                Err(_) => panic!("{} mutated to\n{mutated}\npanicked", file.display()),
            }
        }
    }
    println!("{accepted} mutations accepted, {refused} refused with a reason");
    assert!(refused > 0 && accepted > 0);
}
