//! What a process's memory costs, from Linux's `/proc/<pid>/smaps_rollup`.
//!
//! Resident memory (RSS) counts pages shared with other processes, such as
//! model files mapped by several backends, in full in each of them.  What one
//! more connection really costs is its private memory; PSS shares each shared
//! page among the processes that map it, so the PSS of all backends adds up
//! to what they take together.

/// One process's memory, in kB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident: private and shared pages.
    pub rss_kb: i64,
    /// Proportional: private pages, plus each shared page divided by the
    /// number of processes that map it.
    pub pss_kb: i64,
    /// Pages only this process maps (clean and dirty).
    pub private_kb: i64,
    /// Pages other processes map too (clean and dirty).
    pub shared_kb: i64,
}

/// Reads the contents of a `smaps_rollup` file; `None` if a field is
/// missing.
pub fn parse_smaps_rollup(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<i64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    Some(Memory {
        rss_kb: field("Rss")?,
        pss_kb: field("Pss")?,
        private_kb: field("Private_Clean")? + field("Private_Dirty")?,
        shared_kb: field("Shared_Clean")? + field("Shared_Dirty")?,
    })
}

/// This process's memory; `None` where the kernel has no `smaps_rollup`
/// (before Linux 4.14, or not Linux).
pub fn of_this_process() -> Option<Memory> {
    parse_smaps_rollup(&std::fs::read_to_string("/proc/self/smaps_rollup").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_rollup() {
        let text =
            "5563359ee000-7ffdb37fd000 ---p 00000000 00:00 0                          [rollup]
Rss:                1668 kB
Pss:                 808 kB
Pss_Dirty:           112 kB
Pss_Anon:            112 kB
Shared_Clean:       1376 kB
Shared_Dirty:          0 kB
Private_Clean:       180 kB
Private_Dirty:       112 kB
";
        let m = parse_smaps_rollup(text).unwrap();
        assert_eq!(
            m,
            Memory {
                rss_kb: 1668,
                pss_kb: 808,
                private_kb: 292,
                shared_kb: 1376
            }
        );
        // Pss_Dirty is not Pss, nor Private_Dirty Private_Clean
        assert_eq!(parse_smaps_rollup("Pss_Dirty: 1 kB\n"), None);
    }

    #[test]
    fn this_process_adds_up() {
        let m = of_this_process().expect("Linux with smaps_rollup");
        assert_eq!(m.private_kb + m.shared_kb, m.rss_kb);
        assert!(m.private_kb <= m.pss_kb && m.pss_kb <= m.rss_kb, "{m:?}");
    }
}
