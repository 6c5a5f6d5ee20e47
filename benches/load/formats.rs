//! Peak and steady RSS of `serve` loading the same objects from every state format: the items of
//! a `kind: List` and the documents of a YAML stream must be applied one at a time, so that the
//! peak stays within 1.2x the steady RSS and the steady RSS within 64 MiB + 300 B per object.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Result;

use super::{MIB, Server, objects};

#[derive(Clone, Copy)]
enum Format {
    JsonStream,
    JsonList,
    YamlStream,
    YamlList,
}

impl Format {
    const ALL: [Format; 4] = [
        Format::JsonStream,
        Format::JsonList,
        Format::YamlStream,
        Format::YamlList,
    ];

    fn name(self) -> &'static str {
        match self {
            Format::JsonStream => "JSON stream",
            Format::JsonList => "JSON List",
            Format::YamlStream => "YAML documents",
            Format::YamlList => "YAML List",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Format::JsonStream => "stream.json",
            Format::JsonList => "list.json",
            Format::YamlStream => "stream.yaml",
            Format::YamlList => "list.yaml",
        }
    }
}

/// Block YAML of one object, as `kubectl get -o yaml` writes it.
fn yaml(json: &str) -> Result<String> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    Ok(milo_webhook::crds::to_yaml_document(&value)?)
}

/// Writes the objects in `format`, with kubectl's key order for lists (items before kind).
fn write(path: &Path, format: Format, n: usize) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    match format {
        Format::JsonStream => {
            for object in objects(n) {
                writeln!(w, "{object}")?;
            }
        }
        Format::JsonList => {
            write!(w, r#"{{"apiVersion":"v1","items":["#)?;
            for (i, object) in objects(n).enumerate() {
                write!(w, "{}\n{object}", if i == 0 { "" } else { "," })?;
            }
            writeln!(
                w,
                r#"],"kind":"List","metadata":{{"resourceVersion":""}}}}"#
            )?;
        }
        Format::YamlStream => {
            for object in objects(n) {
                write!(w, "---\n{}", yaml(&object)?)?;
            }
        }
        Format::YamlList => {
            writeln!(w, "apiVersion: v1\nitems:")?;
            for object in objects(n) {
                for (i, line) in yaml(&object)?.lines().enumerate() {
                    writeln!(w, "{}{line}", if i == 0 { "- " } else { "  " })?;
                }
            }
            writeln!(w, "kind: List\nmetadata:\n  resourceVersion: \"\"")?;
        }
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// `VmRSS` and `VmHWM` (the peak) of the server, in MiB.
fn rss_and_peak(server: &Server) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))?;
    let field = |name: &str| -> Result<f64> {
        let line = status.lines().find_map(|l| l.strip_prefix(name));
        let kib = line
            .ok_or_else(|| anyhow::anyhow!("no {name}"))?
            .trim_end_matches("kB")
            .trim();
        Ok(kib.parse::<f64>()? / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Loads `n` objects from each format and reports load time, file size, steady and peak RSS.
pub async fn compare(dir: &Path, n: usize, baseline: f64) -> Result<()> {
    let total = n + super::GROUPS;
    let limit = 64.0 + 300.0 * total as f64 / MIB;
    let mut rows = Vec::new();
    for format in Format::ALL {
        let path = dir.join(format.file());
        write(&path, format, n)?;
        let size = std::fs::metadata(&path)?.len() as f64 / MIB;
        let server = Server::start(dir, &path).await?;
        let ready = server.ready_after.as_secs_f64();
        let (steady, peak) = rss_and_peak(&server)?;
        server.stop().await?;
        std::fs::remove_file(&path)?;
        let per_object = (steady - baseline) * MIB / total as f64;
        let ratio = peak / steady;
        let ok = |b: bool| if b { "met" } else { "MISSED" };
        rows.push(format!(
            "{:<15} {size:>8.1} {ready:>7.1} {steady:>10.1} {peak:>8.1} {ratio:>6.2} {per_object:>12.0}   peak <= 1.2x steady: {}   steady <= {limit:.1} MiB: {}",
            format.name(),
            ok(ratio <= 1.2),
            ok(steady <= limit),
        ));
    }
    println!("\nstate formats, {total} objects (64 MiB + 300 B/object = {limit:.1} MiB):");
    println!("format          file_mib ready_s steady_mib peak_mib  ratio bytes/object");
    rows.iter().for_each(|row| println!("{row}"));
    Ok(())
}
