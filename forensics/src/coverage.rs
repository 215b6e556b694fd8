//! Whether a memory image holds all of the host's memory: its ranges
//! against the host's physical memory map (`/proc/iomem`), and the runs of
//! zero pages that betray a capture tool that gave up on a range.
//!
//! A LiME image can be structurally sound, and hash the same on and off the
//! host, while most of it is zeros: LiME writes zeros for the rest of a
//! range when one page takes longer than its `timeout` to read and write
//! (LiME's README; issue #19), and a capture can also simply miss a range.
//! Both LiME and AVML dump the top-level "System RAM" resources of
//! `/proc/iomem`, one image range per resource, so the check is exact:
//! every System RAM range must be in the image, whole. Zero pages are only
//! a warning: free memory can be zero too, in particular on a recently
//! booted instance whose pages were never touched.

use serde::{Deserialize, Serialize};

/// The page size the zero counts use: x86-64 and arm64 Linux on EC2 both
/// map memory in 4 KiB pages (arm64 kernels with 64 KiB pages are rare on
/// EC2; there a zero run is still a multiple of 4 KiB).
pub const PAGE_BYTES: u64 = 4096;

/// A zero tail shorter than this is never flagged: the last pages of a
/// range are often unused (1 MiB is 256 pages).
pub const SUSPECT_TAIL_MIN_BYTES: u64 = 1 << 20;

/// ... nor one under 1/100 of its range. LiME's zero fill runs from the
/// page that timed out to the range's end, so a real one is usually a good
/// share of the range; free memory seldom forms one unbroken zero run at
/// the very end of a range that long, except on an instance that never
/// touched that memory (hence a warning, not a failure).
pub const SUSPECT_TAIL_MIN_SHARE: u64 = 100;

/// AVML's `MAX_BLOCK_SIZE` (its `src/image.rs`): it leaves out a piece
/// of memory of at most this size that is entirely zero, and in its
/// compressed format cuts ranges into blocks of this size, leaving out
/// each that is all zero. It also writes each range one byte short (it
/// takes `/proc/iomem`'s inclusive end as exclusive). Such gaps are zeros
/// or AVML's habit, not a loss, and the check counts them apart; it cannot
/// tell them from lost memory, so AVML images are held to less.
pub const AVML_BLOCK_BYTES: u64 = 16 << 20;

/// Which tool made an image: AVML leaves out all-zero blocks.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    /// LiME: it writes every range whole, so any gap is lost memory.
    #[default]
    Lime,
    /// AVML writing LiME format (what firebreak's capture asks of it).
    Avml,
    /// AVML's compressed format.
    AvmlCompressed,
}

/// A top-level "System RAM" range of `/proc/iomem` (end inclusive, as
/// there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RamRange {
    /// First physical address of the range.
    pub start: u64,
    /// Last physical address of the range (inclusive).
    pub end: u64,
}

impl RamRange {
    /// Bytes in the range.
    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }
}

/// Why a memory map could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IomemError {
    /// A line that is not `START-END : NAME` with hex addresses.
    #[error("line {line}: {text:?} is not `START-END : NAME` with hexadecimal addresses")]
    Malformed {
        /// 1-based line number in the text.
        line: usize,
        /// The offending line, cut to its first 120 characters.
        text: String,
    },
    /// A top-level System RAM range whose end is below its start.
    #[error("line {line}: the range ends (0x{end:x}) before it starts (0x{start:x})")]
    Backwards {
        /// 1-based line number in the text.
        line: usize,
        /// The range's start address as written.
        start: u64,
        /// The range's end address as written.
        end: u64,
    },
    /// Every address is zero: the map was read without root.
    #[error("every address is zero: /proc/iomem was read without root, which hides the addresses")]
    Hidden,
    /// No top-level "System RAM" line at all (also for an empty text).
    #[error("no top-level \"System RAM\" range: this is not a /proc/iomem of a Linux host")]
    NoRam,
}

/// The top-level "System RAM" ranges of a `/proc/iomem` text, in order.
/// Nested entries (indented: "Kernel code", "Crash kernel", ...) are parts
/// of their parent and are not capture ranges.
pub fn parse_iomem(text: &str) -> Result<Vec<RamRange>, IomemError> {
    let mut out = Vec::new();
    let mut nonzero = false;
    let mut any = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let malformed = || IomemError::Malformed {
            line,
            text: raw.chars().take(120).collect(),
        };
        let (span, name) = raw.trim_start().split_once(" : ").ok_or_else(malformed)?;
        let (s, e) = span.split_once('-').ok_or_else(malformed)?;
        let start = u64::from_str_radix(s.trim(), 16).map_err(|_| malformed())?;
        let end = u64::from_str_radix(e.trim(), 16).map_err(|_| malformed())?;
        any = true;
        nonzero |= start != 0 || end != 0;
        if raw.starts_with(char::is_whitespace) || name.trim() != "System RAM" {
            continue;
        }
        if end < start {
            return Err(IomemError::Backwards { line, start, end });
        }
        out.push(RamRange { start, end });
    }
    if any && !nonzero {
        return Err(IomemError::Hidden);
    }
    if out.is_empty() {
        return Err(IomemError::NoRam);
    }
    out.sort_by_key(|r| r.start);
    Ok(out)
}

/// What a pass over one range of an image saw.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct ZeroStats {
    /// Pages in the range (the last one may be partial).
    pub pages: u64,
    /// Pages whose bytes are all zero.
    pub zero_pages: u64,
    /// Bytes in the unbroken run of zero pages that ends the range.
    pub trailing_zero_bytes: u64,
}

/// Counts zero pages as a range's bytes stream past, in any chunk sizes.
#[derive(Clone, Debug, Default)]
pub struct ZeroScan {
    stats: ZeroStats,
    /// Bytes of the current page seen so far, and whether all were zero.
    in_page: u64,
    page_zero: bool,
    /// Length of the zero run that ends at the current page boundary.
    run: u64,
}

/// Whether every byte is zero; eight at a time, which the compiler turns
/// into wide compares (this runs over every byte of multi-GiB images).
fn all_zero(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let whole = words.by_ref().all(|w| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        u64::from_ne_bytes(b) == 0
    });
    whole && words.remainder().iter().all(|&b| b == 0)
}

impl ZeroScan {
    /// A scan at the start of a range.
    pub fn new() -> ZeroScan {
        ZeroScan {
            page_zero: true,
            ..ZeroScan::default()
        }
    }

    /// Takes the range's next bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = PAGE_BYTES - self.in_page;
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
            let (now, rest) = bytes.split_at(take);
            self.page_zero = self.page_zero && all_zero(now);
            self.in_page += take as u64;
            bytes = rest;
            if self.in_page == PAGE_BYTES {
                self.end_page();
            }
        }
    }

    fn end_page(&mut self) {
        self.stats.pages += 1;
        if self.page_zero {
            self.stats.zero_pages += 1;
            self.run += self.in_page;
        } else {
            self.run = 0;
        }
        self.in_page = 0;
        self.page_zero = true;
    }

    /// The counts for the whole range (a last partial page counts).
    pub fn finish(mut self) -> ZeroStats {
        if self.in_page > 0 {
            self.end_page();
        }
        self.stats.trailing_zero_bytes = self.run;
        self.stats
    }
}

/// One range of an image with what the pass over it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ImageRange {
    /// First physical address the range holds.
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    /// The zero-page counts of the range's bytes.
    #[serde(flatten)]
    pub zeros: ZeroStats,
}

/// A System RAM range, or the part of it, that the image lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Missing {
    /// First physical address the image lacks.
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    /// Bytes lacking: `end - start + 1`.
    pub missing_bytes: u64,
}

/// An image range that ends in a long run of zero pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ZeroTail {
    /// Physical address where the zero run begins.
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    /// Bytes in the zero run (the range's `trailing_zero_bytes`).
    pub zero_bytes: u64,
}

/// The coverage of an image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Coverage {
    /// The image's ranges, with their zero pages.
    pub ranges: Vec<ImageRange>,
    /// The host's System RAM ranges, when its memory map was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_ram: Option<Vec<RamRange>>,
    /// Each System RAM range, or part of one, the image lacks (empty
    /// without a memory map: nothing to compare with).
    pub missing: Vec<Missing>,
    /// Ranges whose tail is a long run of zero pages: possibly a capture
    /// tool's zero fill (a warning: free memory can be zero too).
    pub suspect_zero_tails: Vec<ZeroTail>,
    /// Bytes of System RAM an AVML image leaves out as whole zero blocks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_zero_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Coverage {
    /// True when nothing of the host's memory is missing (zero tails are
    /// warnings and do not count).
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Zero pages of the whole image, and its pages.
    pub fn zero_pages(&self) -> (u64, u64) {
        self.ranges.iter().fold((0, 0), |(z, p), r| {
            (z + r.zeros.zero_pages, p + r.zeros.pages)
        })
    }

    /// One line for a report or a custody note.
    pub fn summary(&self) -> String {
        let (zero, pages) = self.zero_pages();
        let share = (zero * 100).checked_div(pages).unwrap_or(0);
        let mut s = format!(
            "{} ranges, {zero} of {pages} pages zero ({share}%)",
            self.ranges.len()
        );
        match &self.system_ram {
            None => s.push_str("; no memory map to compare with"),
            Some(ram) if self.missing.is_empty() => {
                s.push_str(&format!("; all {} System RAM ranges present", ram.len()))
            }
            Some(_) => {
                let bytes: u64 = self.missing.iter().map(|m| m.missing_bytes).sum();
                s.push_str(&format!(
                    "; MISSING {bytes} bytes of System RAM in {} ranges",
                    self.missing.len()
                ));
            }
        }
        if self.omitted_zero_bytes > 0 {
            s.push_str(&format!(
                "; {} bytes left out by AVML as all-zero blocks",
                self.omitted_zero_bytes
            ));
        }
        if !self.suspect_zero_tails.is_empty() {
            s.push_str(&format!(
                "; {} ranges end in a long run of zero pages (possibly truncated)",
                self.suspect_zero_tails.len()
            ));
        }
        s
    }
}

/// Whether a range's zero tail is long enough to flag.
fn suspect(range_bytes: u64, tail: u64) -> bool {
    tail >= SUSPECT_TAIL_MIN_BYTES && tail.saturating_mul(SUSPECT_TAIL_MIN_SHARE) >= range_bytes
}

/// Whether a gap can be memory AVML left out (see [`AVML_BLOCK_BYTES`]).
fn avml_omitted(gap: &Missing, tool: Tool) -> bool {
    match tool {
        Tool::Lime => false,
        Tool::Avml => gap.missing_bytes <= AVML_BLOCK_BYTES,
        Tool::AvmlCompressed => {
            gap.missing_bytes <= AVML_BLOCK_BYTES
                || gap.missing_bytes.is_multiple_of(AVML_BLOCK_BYTES)
        }
    }
}

/// Compares an image's ranges with the host's System RAM (when known).
pub fn coverage(image: &[ImageRange], ram: Option<&[RamRange]>, tool: Tool) -> Coverage {
    let mut missing = Vec::new();
    let mut omitted_zero_bytes = 0;
    if let Some(ram) = ram {
        let mut covered: Vec<(u64, u64)> = image.iter().map(|r| (r.start, r.end)).collect();
        covered.sort_unstable();
        for r in ram {
            // Walk the image ranges that overlap r, collecting the gaps.
            let mut at = r.start;
            let mut done = false;
            for &(s, e) in covered.iter().filter(|(s, e)| *e >= r.start && *s <= r.end) {
                if s > at {
                    missing.push(gap(at, s - 1));
                }
                if e >= r.end {
                    done = true;
                    break;
                }
                at = at.max(e + 1);
            }
            if !done && at <= r.end {
                missing.push(gap(at, r.end));
            }
        }
        missing.retain(|g| {
            let omitted = avml_omitted(g, tool);
            if omitted {
                omitted_zero_bytes += g.missing_bytes;
            }
            !omitted
        });
    }
    let suspect_zero_tails = image
        .iter()
        .filter(|r| suspect(r.end - r.start + 1, r.zeros.trailing_zero_bytes))
        .map(|r| ZeroTail {
            start: r.end + 1 - r.zeros.trailing_zero_bytes,
            end: r.end,
            zero_bytes: r.zeros.trailing_zero_bytes,
        })
        .collect();
    Coverage {
        ranges: image.to_vec(),
        system_ram: ram.map(<[RamRange]>::to_vec),
        missing,
        suspect_zero_tails,
        omitted_zero_bytes,
    }
}

/// Integers above this lose precision in JSON readers that use doubles
/// (I-JSON, RFC 7493), and RFC 8785 writes every number as one: custody
/// records hold no larger integer. Physical addresses can be larger (and a
/// compromised host chooses what its /proc/iomem says), so the coverage a
/// record keeps writes them as hex strings.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// `0x` and lower-case hex, for custody records.
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{v:x}"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        let digits = text
            .strip_prefix("0x")
            .ok_or_else(|| serde::de::Error::custom("a hex number starts with 0x"))?;
        u64::from_str_radix(digits, 16).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct RecordRange {
    #[serde(with = "hex_u64")]
    start: u64,
    #[serde(with = "hex_u64")]
    end: u64,
    #[serde(with = "hex_u64")]
    pages: u64,
    #[serde(with = "hex_u64")]
    zero_pages: u64,
    #[serde(with = "hex_u64")]
    trailing_zero_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct RecordSpan {
    #[serde(with = "hex_u64")]
    start: u64,
    #[serde(with = "hex_u64")]
    end: u64,
    #[serde(with = "hex_u64")]
    bytes: u64,
}

/// [`Coverage`] as a custody record keeps it: every number a hex string.
#[derive(Serialize, Deserialize)]
struct RecordCoverage {
    summary: String,
    ranges: Vec<RecordRange>,
    system_ram: Option<Vec<RecordSpan>>,
    missing: Vec<RecordSpan>,
    suspect_zero_tails: Vec<RecordSpan>,
    #[serde(with = "hex_u64")]
    omitted_zero_bytes: u64,
}

impl Coverage {
    /// The coverage as a custody record's `details` hold it (numbers as
    /// hex strings: see [`MAX_SAFE_INTEGER`]).
    pub fn to_record(&self) -> serde_json::Value {
        let span = |start: u64, end: u64, bytes: u64| RecordSpan { start, end, bytes };
        let r = RecordCoverage {
            summary: self.summary(),
            ranges: self
                .ranges
                .iter()
                .map(|r| RecordRange {
                    start: r.start,
                    end: r.end,
                    pages: r.zeros.pages,
                    zero_pages: r.zeros.zero_pages,
                    trailing_zero_bytes: r.zeros.trailing_zero_bytes,
                })
                .collect(),
            system_ram: self
                .system_ram
                .as_ref()
                .map(|v| v.iter().map(|r| span(r.start, r.end, r.size())).collect()),
            missing: self
                .missing
                .iter()
                .map(|m| span(m.start, m.end, m.missing_bytes))
                .collect(),
            suspect_zero_tails: self
                .suspect_zero_tails
                .iter()
                .map(|t| span(t.start, t.end, t.zero_bytes))
                .collect(),
            omitted_zero_bytes: self.omitted_zero_bytes,
        };
        serde_json::to_value(r).unwrap_or(serde_json::Value::Null)
    }

    /// A coverage kept by [`Coverage::to_record`].
    pub fn from_record(v: &serde_json::Value) -> Option<Coverage> {
        let r: RecordCoverage = serde_json::from_value(v.clone()).ok()?;
        Some(Coverage {
            ranges: r
                .ranges
                .into_iter()
                .map(|x| ImageRange {
                    start: x.start,
                    end: x.end,
                    zeros: ZeroStats {
                        pages: x.pages,
                        zero_pages: x.zero_pages,
                        trailing_zero_bytes: x.trailing_zero_bytes,
                    },
                })
                .collect(),
            system_ram: r.system_ram.map(|v| {
                v.into_iter()
                    .map(|x| RamRange {
                        start: x.start,
                        end: x.end,
                    })
                    .collect()
            }),
            missing: r
                .missing
                .into_iter()
                .map(|x| Missing {
                    start: x.start,
                    end: x.end,
                    missing_bytes: x.bytes,
                })
                .collect(),
            suspect_zero_tails: r
                .suspect_zero_tails
                .into_iter()
                .map(|x| ZeroTail {
                    start: x.start,
                    end: x.end,
                    zero_bytes: x.bytes,
                })
                .collect(),
            omitted_zero_bytes: r.omitted_zero_bytes,
        })
    }
}

fn gap(start: u64, end: u64) -> Missing {
    Missing {
        start,
        end,
        missing_bytes: end - start + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IOMEM: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-bffe9fff : System RAM
  01000000-01e0284e : Kernel code
  2a000000-31ffffff : Crash kernel
bffea000-bfffffff : Reserved
100000000-23fffffff : System RAM
";

    #[test]
    fn iomem_gives_the_top_level_system_ram_ranges() {
        let r = parse_iomem(IOMEM).unwrap();
        assert_eq!(
            r,
            vec![
                RamRange {
                    start: 0x1000,
                    end: 0x9fbff
                },
                RamRange {
                    start: 0x100000,
                    end: 0xbffe9fff
                },
                RamRange {
                    start: 0x1_0000_0000,
                    end: 0x2_3fff_ffff
                },
            ]
        );
    }

    #[test]
    fn an_iomem_read_without_root_or_garbage_is_refused() {
        let hidden = "00000000-00000000 : Reserved\n00000000-00000000 : System RAM\n";
        assert_eq!(parse_iomem(hidden), Err(IomemError::Hidden));
        assert!(matches!(
            parse_iomem("hello\n"),
            Err(IomemError::Malformed { line: 1, .. })
        ));
        assert_eq!(
            parse_iomem("00000000-00000fff : Reserved\n"),
            Err(IomemError::NoRam)
        );
    }

    fn range(start: u64, end: u64, zeros: ZeroStats) -> ImageRange {
        ImageRange { start, end, zeros }
    }

    #[test]
    fn zero_pages_are_counted_across_any_chunking() {
        let mut data = vec![1u8; 3 * 4096];
        data.extend(vec![0u8; 2 * 4096 + 100]);
        for chunk in [1usize, 7, 4096, 5000, 1 << 20] {
            let mut z = ZeroScan::new();
            for c in data.chunks(chunk) {
                z.update(c);
            }
            let s = z.finish();
            assert_eq!(s.pages, 6, "chunk {chunk}");
            assert_eq!(s.zero_pages, 3, "chunk {chunk}");
            assert_eq!(s.trailing_zero_bytes, 2 * 4096 + 100, "chunk {chunk}");
        }
        // A single non-zero byte in the last page breaks the tail.
        let mut z = ZeroScan::new();
        let mut d = vec![0u8; 8192];
        d[8191] = 1;
        z.update(&d);
        assert_eq!(z.finish().trailing_zero_bytes, 0);
    }

    #[test]
    fn missing_ranges_and_parts_are_named() {
        let ram = parse_iomem(IOMEM).unwrap();
        let none = ZeroStats::default();
        // Range 1 whole, range 2 cut short, range 3 absent.
        let image = [
            range(0x1000, 0x9fbff, none),
            range(0x100000, 0x7fffffff, none),
        ];
        let c = coverage(&image, Some(&ram), Tool::Lime);
        assert_eq!(
            c.missing,
            vec![
                Missing {
                    start: 0x8000_0000,
                    end: 0xbffe9fff,
                    missing_bytes: 0x3ffea000
                },
                Missing {
                    start: 0x1_0000_0000,
                    end: 0x2_3fff_ffff,
                    missing_bytes: 0x1_4000_0000
                },
            ]
        );
        assert!(!c.complete());
        // A hole in the middle of a range.
        let image = [
            range(0x1000, 0x9fbff, none),
            range(0x100000, 0x1fffff, none),
            range(0x300000, 0xbffe9fff, none),
            range(0x1_0000_0000, 0x2_3fff_ffff, none),
        ];
        let c = coverage(&image, Some(&ram), Tool::Lime);
        assert_eq!(
            c.missing,
            vec![Missing {
                start: 0x200000,
                end: 0x2fffff,
                missing_bytes: 0x100000
            }]
        );
        // Everything there.
        let image: Vec<ImageRange> = ram.iter().map(|r| range(r.start, r.end, none)).collect();
        let c = coverage(&image, Some(&ram), Tool::Lime);
        assert!(c.complete() && c.suspect_zero_tails.is_empty(), "{c:?}");
        assert!(
            c.summary().contains("all 3 System RAM ranges present"),
            "{}",
            c.summary()
        );
    }

    #[test]
    fn avml_may_leave_out_zero_blocks_and_range_ends_but_not_more() {
        let b = AVML_BLOCK_BYTES;
        let ram = [
            RamRange {
                start: 0x1000,
                end: 0x9fbff,
            },
            RamRange {
                start: 0x100000,
                end: 0x100000 + 8 * b - 1,
            },
        ];
        let none = ZeroStats::default();
        // One byte short at each end (AVML's off-by-one), and one all-zero
        // 16 MiB block left out of the second range.
        let image = [
            range(0x1000, 0x9fbfe, none),
            range(0x100000, 0x100000 + 3 * b - 1, none),
            range(0x100000 + 4 * b, 0x100000 + 8 * b - 2, none),
        ];
        let c = coverage(&image, Some(&ram), Tool::Avml);
        assert!(c.missing.is_empty(), "{:?}", c.missing);
        assert_eq!(c.omitted_zero_bytes, 1 + b + 1);
        // The same image from LiME is missing those bytes.
        assert_eq!(coverage(&image, Some(&ram), Tool::Lime).missing.len(), 3);
        // A gap longer than a block is lost memory, even from AVML; the
        // compressed format may leave out whole blocks of it.
        let image = [
            range(0x1000, 0x9fbff, none),
            range(0x100000, 0x100000 + 5 * b - 1, none),
        ];
        let c = coverage(&image, Some(&ram), Tool::Avml);
        assert_eq!(c.missing.len(), 1, "{c:?}");
        assert!(coverage(&image, Some(&ram), Tool::AvmlCompressed)
            .missing
            .is_empty());
        // A small range left out whole may be zeros; a large one is lost.
        let c = coverage(
            &[range(0x100000, 0x100000 + 8 * b - 1, none)],
            Some(&ram),
            Tool::Avml,
        );
        assert_eq!(c.missing.len(), 0, "the 636 KiB range is under a block");
        let c = coverage(&[range(0x1000, 0x9fbff, none)], Some(&ram), Tool::Avml);
        assert_eq!(c.missing.len(), 1);
    }

    #[test]
    fn a_coverage_survives_a_custody_record_with_addresses_beyond_json_doubles() {
        let ram = [RamRange {
            start: 0xffff_ffff_ff00_0000,
            end: u64::MAX,
        }];
        let c = coverage(&[], Some(&ram), Tool::Lime);
        let rec = c.to_record();
        let text = serde_json::to_string(&rec).unwrap();
        assert!(text.contains("\"0xffffffffff000000\""), "{text}");
        assert_eq!(Coverage::from_record(&rec), Some(c));
    }

    #[test]
    fn a_long_zero_tail_is_flagged_a_short_one_is_not() {
        let big = ZeroStats {
            pages: 4096,
            zero_pages: 2048,
            trailing_zero_bytes: 8 << 20,
        };
        let small = ZeroStats {
            pages: 4096,
            zero_pages: 10,
            trailing_zero_bytes: 40960,
        };
        let image = [
            range(0, (16 << 20) - 1, big),
            range(16 << 20, (32 << 20) - 1, small),
        ];
        let c = coverage(&image, None, Tool::Lime);
        assert_eq!(
            c.suspect_zero_tails,
            vec![ZeroTail {
                start: 8 << 20,
                end: (16 << 20) - 1,
                zero_bytes: 8 << 20
            }]
        );
        assert!(c.complete(), "no map: nothing can be missing");
        assert!(c.summary().contains("possibly truncated"));
        // 1 MiB at the end of a 1 TiB range is under 1%: not flagged.
        let huge = ZeroStats {
            pages: 1 << 28,
            zero_pages: 256,
            trailing_zero_bytes: 1 << 20,
        };
        assert!(
            coverage(&[range(0, (1u64 << 40) - 1, huge)], None, Tool::Lime)
                .suspect_zero_tails
                .is_empty()
        );
    }
}
