//! Input tables for `lydlr eval` and training: CSV, parquet or MCAP, all in the external-data
//! contract (a time column `t` in seconds, then one numeric column per channel).

use std::path::Path;

use anyhow::{Context, bail};
use polars::prelude::*;

/// One stream: timestamps and channels, column-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Where it came from (file, and MCAP topic).
    pub source: String,
    pub names: Vec<String>,
    pub t_ns: Vec<i64>,
    pub columns: Vec<Vec<f64>>,
}

impl Table {
    pub fn samples(&self) -> usize {
        self.t_ns.len()
    }

    /// What the data says of itself: f32 when every value survives the round trip through
    /// f32, the median sampling rate, and each channel's noise sigma (robust estimate).
    pub fn schema(&self, name: &str) -> lydlr_codec::StreamSchema {
        use lydlr_codec::{SampleType, SensorKind, StreamSchema};
        let f32_exact = self
            .columns
            .iter()
            .flatten()
            .all(|v| f64::from(*v as f32).to_bits() == v.to_bits());
        let mut dts: Vec<i64> = self
            .t_ns
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|d| *d > 0)
            .collect();
        dts.sort_unstable();
        StreamSchema {
            name: name.into(),
            kind: SensorKind::Other,
            sample_type: if f32_exact {
                SampleType::F32
            } else {
                SampleType::F64
            },
            channels: self.names.clone(),
            units: vec![String::new(); self.names.len()],
            rate_hz: dts.get(dts.len() / 2).map_or(0.0, |&d| 1e9 / d as f64),
            noise_sigma: self.columns.iter().map(|c| super::noise_sigma(c)).collect(),
            lsb: vec![None; self.names.len()],
        }
    }

    /// Row `i` as a frame.
    pub fn frame(&self, i: usize) -> lydlr_codec::Frame {
        // Collected straight into the frame's inline storage: no allocation for up to eight
        // channels.
        lydlr_codec::Frame {
            timestamp_ns: self.t_ns[i],
            values: self.columns.iter().map(|c| c[i]).collect(),
        }
    }
}

fn seconds_to_ns(t: f64) -> i64 {
    (t * 1e9).round() as i64
}

/// Reads every stream in `path`: one table for CSV and parquet, one per topic for MCAP.
pub fn read_tables(path: &Path) -> anyhow::Result<Vec<Table>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => Ok(vec![read_parquet(path)?]),
        Some("mcap") => read_mcap(path),
        _ => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(vec![parse_csv(&text, &path.display().to_string())?])
        }
    }
}

/// Parses CSV text; errors name the row (1-based, header is row 1) and the column.
pub fn parse_csv(text: &str, source: &str) -> anyhow::Result<Table> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        bail!("{source}: empty file");
    };
    let names: Vec<String> = header
        .split(',')
        .map(|h| h.trim().trim_matches('"').to_owned())
        .collect();
    if names.first().map(String::as_str) != Some("t") {
        bail!(
            "{source}: the first column must be `t` (seconds), found {:?}",
            names.first().map_or("", |s| s.as_str())
        );
    }
    if names.len() < 2 {
        bail!("{source}: no channel columns after `t`");
    }
    let mut t_ns = Vec::new();
    let mut columns = vec![Vec::new(); names.len() - 1];
    for (index, line) in lines {
        let row = index + 1;
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != names.len() {
            bail!(
                "{source}: row {row} has {} cells, the header has {}",
                cells.len(),
                names.len()
            );
        }
        for (c, cell) in cells.iter().enumerate() {
            let value: f64 = cell.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "{source}: row {row}, column {} ({}): {:?} is not a number",
                    c + 1,
                    names[c],
                    cell.trim()
                )
            })?;
            if c == 0 {
                if !value.is_finite() {
                    bail!("{source}: row {row}, column 1 (t): time must be finite");
                }
                t_ns.push(seconds_to_ns(value));
            } else {
                columns[c - 1].push(value);
            }
        }
    }
    if t_ns.is_empty() {
        bail!("{source}: no rows");
    }
    Ok(Table {
        source: source.to_owned(),
        names: names[1..].to_vec(),
        t_ns,
        columns,
    })
}

fn read_parquet(path: &Path) -> anyhow::Result<Table> {
    let source = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("opening {source}"))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| anyhow::anyhow!("reading {source}: {e}"))?;
    let mut names = Vec::new();
    let mut t_ns = Vec::new();
    let mut columns = Vec::new();
    for (c, column) in df.columns().iter().enumerate() {
        let name = column.name().to_string();
        if c == 0 && name != "t" {
            bail!("{source}: the first column must be `t` (seconds), found {name:?}");
        }
        let cast = column
            .cast(&DataType::Float64)
            .map_err(|_| anyhow::anyhow!("{source}: column {} ({name}) is not numeric", c + 1))?;
        let values = cast.f64()?;
        let mut out = Vec::with_capacity(values.len());
        for (row, v) in values.iter().enumerate() {
            let v = v.ok_or_else(|| {
                anyhow::anyhow!(
                    "{source}: row {}, column {} ({name}): missing value",
                    row + 1,
                    c + 1
                )
            })?;
            out.push(v);
        }
        if c == 0 {
            t_ns = out.into_iter().map(seconds_to_ns).collect();
        } else {
            names.push(name);
            columns.push(out);
        }
    }
    if columns.is_empty() {
        bail!("{source}: no channel columns after `t`");
    }
    Ok(Table {
        source,
        names,
        t_ns,
        columns,
    })
}

/// MCAP as `lydlr sim` writes it: JSON messages `{"t": s, "<channel>": value, ...}`, one
/// table per topic, channels in the order of the stream schema in the channel metadata.
fn read_mcap(path: &Path) -> anyhow::Result<Vec<Table>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut tables: Vec<(String, Table)> = Vec::new();
    for message in mcap::MessageStream::new(&bytes)? {
        let message = message?;
        let topic = message.channel.topic.clone();
        let index = match tables.iter().position(|(t, _)| *t == topic) {
            Some(i) => i,
            None => {
                let names: Vec<String> = match message.channel.metadata.get("lydlr.stream_schema") {
                    Some(json) => serde_json::from_str::<lydlr_codec::StreamSchema>(json)?.channels,
                    None => {
                        let value: serde_json::Value = serde_json::from_slice(&message.data)?;
                        let mut keys: Vec<String> = value
                            .as_object()
                            .map(|o| o.keys().cloned().collect())
                            .unwrap_or_default();
                        keys.retain(|k| k != "t");
                        keys
                    }
                };
                tables.push((
                    topic.clone(),
                    Table {
                        source: format!("{}#{topic}", path.display()),
                        columns: vec![Vec::new(); names.len()],
                        names,
                        t_ns: Vec::new(),
                    },
                ));
                tables.len() - 1
            }
        };
        let table = &mut tables[index].1;
        let row = table.t_ns.len() + 1;
        let value: serde_json::Value = serde_json::from_slice(&message.data)
            .with_context(|| format!("{}: message {row} is not JSON", table.source))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            match value.get(name) {
                Some(serde_json::Value::Null) => Ok(f64::NAN),
                Some(v) => v.as_f64().ok_or_else(|| {
                    anyhow::anyhow!("{}: row {row}, column {name}: not a number", table.source)
                }),
                None => bail!("{}: row {row}: no column {name}", table.source),
            }
        };
        let t = field("t")?;
        let values = table
            .names
            .iter()
            .map(|n| field(n))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        table.t_ns.push(seconds_to_ns(t));
        for (column, v) in table.columns.iter_mut().zip(values) {
            column.push(v);
        }
    }
    if tables.is_empty() {
        bail!("{}: no messages", path.display());
    }
    Ok(tables.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_csv_names_row_and_column() {
        let err = |text: &str| parse_csv(text, "x.csv").unwrap_err().to_string();
        assert!(err("time,a\n0,1\n").contains("first column must be `t`"));
        assert_eq!(
            err("t,a,b\n0,1,2\n0.1,1,oops\n"),
            "x.csv: row 3, column 3 (b): \"oops\" is not a number"
        );
        assert_eq!(
            err("t,a,b\n0,1,2\n0.1,1\n"),
            "x.csv: row 3 has 2 cells, the header has 3"
        );
        assert!(err("t\n0\n").contains("no channel columns"));
        let ok = parse_csv("t,a\n0.5,1.25\n1,nan\n", "x.csv").unwrap();
        assert_eq!(ok.t_ns, vec![500_000_000, 1_000_000_000]);
        assert!(ok.columns[0][1].is_nan());
    }
}
