//! What the in-process benchmarks share.

/// Resident and peak memory of this process, in MiB, from /proc.
pub fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The benchmark's `--name value` flags (after `cargo bench`'s own `--bench`), each parsed into
/// the field `set` names; an unknown flag or a bad value stops the run with a message.
pub fn flags(mut set: impl FnMut(&str, &str) -> Result<(), String>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--bench" {
            continue;
        }
        let value = rest.next().map(String::as_str).unwrap_or_default();
        if let Err(error) = set(flag, value) {
            eprintln!("{flag} {value}: {error}");
            std::process::exit(2);
        }
    }
}

/// `value` parsed as `T`, or why not.
pub fn parse<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not a valid value"))
}
