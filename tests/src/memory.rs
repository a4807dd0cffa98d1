//! This process's memory as the kernel counts it (Linux), for the tests that bound it.

/// The process's `VmRSS` and `VmHWM` (its peak since start or the last [`reset_peak`]), in
/// bytes, from `/proc/self/status`.
pub fn resident() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("the field in /proc/self/status")
            << 10
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets `VmHWM` to the current `VmRSS` (Linux 4.0+: writing 5 to `clear_refs`).
pub fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("/proc/self/clear_refs");
}
