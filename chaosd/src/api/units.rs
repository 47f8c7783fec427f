//! Quantities as requests and config files write them: byte sizes with units.

/// Splits `"1.5GiB"` into `(1.5, "GiB")` (the unit trimmed); None without a leading number.
pub fn split_number(s: &str) -> Option<(f64, &str)> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Parses a byte size: `1073741824`, `512MiB`, `2GiB`, `1.5G` (k/M/G/T are powers of 1000,
/// Ki/Mi/Gi/Ti powers of 1024; a trailing `B` is optional).
pub fn parse_size(input: &str) -> Result<u64, String> {
    let (num, unit) = split_number(input.trim())
        .ok_or_else(|| format!("{input:?} does not start with a number"))?;
    let unit = unit
        .strip_suffix('B')
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?}")),
    };
    let bytes = num * mult;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err("too large".into());
    }
    Ok(bytes as u64)
}
