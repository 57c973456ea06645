//! Automatic statistical disclosure control (SDC) checks for research outputs
//! leaving the Trusted Research Environment.
//!
//! [`check`] reads one file once, streaming, and returns a [`Report`] of
//! [`Finding`]s. [`acro_results`] turns many reports into an ACRO-compatible
//! `results.json` value. Thresholds and switches are [`Rules`], read from
//! `scanners/disclosure.toml` and overridden per tier by a policy.
//!
//! # What kind of file is it?
//!
//! The kind is sniffed from the content; the name is only a hint (a `.csv` /
//! `.tsv` name lets a one-column file count as a table).
//!
//! 1. The first 64 KiB are read. Magic bytes of PNG, JPEG, GIF, WebP, TIFF,
//!    PDF, ZIP (xlsx/docx/…), gzip and OLE (xls/doc) files, and SVG images
//!    (`<svg` at the start, or an XML prolog followed by `<svg`), make the file
//!    [`FileKind::Unscannable`] with one `unscannable` finding of status
//!    review. So does any other binary: a NUL byte or invalid UTF-8 in the
//!    first 8 KiB (a UTF-8 BOM is skipped; UTF-16 counts as binary).
//! 2. A table is recognised when, over the complete lines of that sample
//!    (at most 50 records, parsed as CSV so quoted fields work), one of the
//!    delimiters `\t` `,` `;` `|` gives every record the same number of fields,
//!    at least 2, in at least 2 records, and some field contains a digit.
//!    When several delimiters qualify the one giving most fields wins (ties:
//!    that order).
//! 3. Everything else is text (code, notebooks — an `.ipynb` is scanned as
//!    its raw JSON text, so line numbers are the file's —, markdown, logs).
//!
//! # Tables
//!
//! **Header.** A header row is optional. The first row is a header when it has
//! no numeric cell other than year-like integers (1900–2100, e.g. `region,2019,2020`),
//! at least one non-numeric cell, and some column where the first row is
//! non-numeric (or a year, or has no digit at all) while most of the following
//! rows are numeric (or contain digits, e.g. dates). A single all-text row is a
//! header.
//!
//! **Locations.** `Cell { row, col }`, `Row` and `Column` are 1-based as a person
//! reads the table: row 1 is the first *data* row after the header (the
//! header, if any, is not counted), column 1 is the file's first field (a label
//! column counts). ACRO's `cells` lists use 0-based `[row, col]` positions of
//! the data; [`acro_results`] writes `[row - 1, col - 1]` with the same meaning
//! (0-based data row, 0-based file column including any label column).
//!
//! **Cells.** Surrounding spaces are trimmed; quoted fields are unquoted by the
//! CSV parser; thousands separators (`1,234`, `12,000,000`) are accepted in
//! quoted fields; a trailing `%` is accepted; `12.0` counts as the integer 12.
//! A *suppressed* cell is empty, one of [`Rules::suppression_markers`]
//! (case-insensitive: `*`, `[REDACTED]`, `NA`, `-`, `x`, `c`, …), or `<N` /
//! `<=N` / `≤N` for a number N.
//!
//! **Column roles** (decided once, from the first
//! [`Rules::max_table_rows_analysed`] data rows; later rows are only counted
//! and cell-checked):
//! - *text* — any non-numeric, non-suppressed value: labels, codes, dates.
//! - *magnitude* — a header with a word among mean, average, avg, median,
//!   std, stdev, sd, variance, min, max, minimum, maximum, iqr, or "standard
//!   deviation", "total value", or "sum" with other words (`sum_cost`; a bare
//!   `sum` header is a total column). Reported as `magnitude` (review, Column)
//!   and never cell-checked.
//! - *percentage / rate* — a header with `%`, percent, percentage, pct, rate,
//!   proportion, prevalence. Never cell-checked.
//! - *denominator* — only when the table has a percentage column: an integer
//!   column headed denominator / denom / n / total / population. A value
//!   `0 < d < threshold` is `small-denominator` (fail, Cell); it is not also
//!   reported as a small cell.
//! - *other numeric* — non-integers; integer columns whose header says id,
//!   year, age, code, date, month, week, day, time, postcode, lat/lon,
//!   height, weight, bmi, score, index, rank…; integers with 8+ digits or a
//!   leading zero (identifier-like); all-year values (1900–2100); a first
//!   column rising by a constant step (an age band / period index).
//! - *frequency* — every other integer-valued column. Its cells get the
//!   `small-cell` (0 < n < threshold, fail), `zero` (review unless
//!   [`Rules::zeros_fail`]; a zero may be structural, but can reveal that no
//!   one in a group has an attribute, as OpenSAFELY notes) and `negative`
//!   (fail) checks, on every row of the file, however long.
//!
//! **Whole-table checks** run on the analysed rows, and the aggregate-table
//! ones (class disclosure, differencing) only when the whole table was
//! analysed and has at most [`Rules::max_microdata_rows`] rows:
//! - *Totals.* A total row has, in its first text column, a label in
//!   [`Rules::total_labels`] (`total`, `all`, `sum`, `overall`, `grand
//!   total`, …) or one starting with `total ` / `all `; a total column has
//!   such a header. Without a label, a row is an arithmetic total when in every
//!   frequency column without suppressed cells its value equals the sum of the
//!   other rows (at least 2 such columns; or 1 column over at least 4 other
//!   rows, or over 3 when a column with suppressed cells agrees) and, in
//!   columns with suppressed cells, at least the sum of the shown ones;
//!   likewise for columns.
//! - `class-disclosure` (fail): over the non-total frequency columns and
//!   non-total rows, a row or column of at least 2 shown cells with exactly one
//!   non-zero cell (everyone in the group falls in one class). Location Row /
//!   Column.
//! - `differencing` (fail): a shown total whose line (the column of a total
//!   row, the row of a total column) has exactly one suppressed cell: that cell
//!   is recoverable by subtraction. Location: the recoverable Cell.
//! - `microdata-rows` (fail, File): more data rows than
//!   [`Rules::max_microdata_rows`].
//! - `id-column` (fail, Column): at least [`Rules::min_id_column_rows`]
//!   values, all distinct, and either all identifier-shaped (6+ digits, or
//!   5–40 characters of letters *and* digits with `-`/`_`, no spaces) or the
//!   header says id / identifier / patient / nhs / mrn / uuid… Columns headed
//!   code / snomed / icd / region / area / lsoa / practice… and ONS area codes
//!   (`E06000001`) are labels, not identifiers.
//! - `date-of-birth` (fail, Column): a header saying birth / dob / born and
//!   mostly dates; or, when the header does not name an event (date of
//!   admission, week, period…), at least `min_id_column_rows` full dates
//!   (90 %+) with years 1900–2030 spanning 10 years or more.
//! - `postcode-column` (fail, Column): 80 %+ of the values are full UK
//!   postcodes.
//!
//! **Identifiers in table cells.** When [`Rules::table_cell_identifiers`] is on,
//! cells of text columns (and of non-count integer columns, with 9+ digits)
//! that pass a cheap byte prefilter (an `@`; 9+ digits; 4+ digits with `.` or
//! `:`; an upper-case letter and a digit) are run through
//! the text checks below; findings are located at the Cell. Frequency,
//! magnitude and percentage cells never are, so a numeric table costs no regex.
//! Per-cell postcode findings are not repeated inside a `postcode-column`.
//!
//! # Text, code and notebooks
//!
//! Line by line, streaming; `Line { line, column }` is 1-based, the column
//! counted in characters. Lines longer than 1 MiB are split (a match
//! straddling the split can be missed). All text findings fail:
//! - `email`;
//! - `nhs-number`: 10 digits, contiguous or spaced/dashed 3-3-4, that pass the
//!   modulus-11 check and are not part of a phone number (a `+CC` or `0…`
//!   number in phone shape is a phone first). A 3-3-4 number that fails the
//!   check is not reported at all; a contiguous 10-digit one that fails is a
//!   `long-id` (if `long_id_digits` ≤ 10);
//! - `postcode`: the official UK pattern, upper case only (`SW1A 1AA`,
//!   `M1 1AE`, `GIR 0AA`; the space is optional);
//! - `phone`: UK `0…` (10–11 digits) and `+44` numbers, and international
//!   `+CC` numbers with 9–15 digits in all;
//! - `ip-address`: dotted IPv4 with every octet ≤ 255 (not part of a longer
//!   dotted run such as `1.2.3.4.5`; loopback `127.x.x.x` and `0.0.0.0` are not
//!   identifying and are skipped; three-part versions `1.2.3` never match), and
//!   IPv6 with at least three non-empty groups and a decimal digit, validated
//!   by the standard parser (so `std::io`, `a::b` and `12:30:45` are not);
//! - `long-id`: a run of at least `long_id_digits` digits bounded by
//!   non-word characters, not the fractional or integer part of a decimal
//!   number, and not inside an NHS number or phone number.
//!
//! # Messages
//!
//! A finding's message names the rule, its location and, for tables, the
//! column header (sanitised, at most 60 characters); it never contains a cell
//! value or matched text. Headers come from the file, so a header row
//! misdetected as data (or vice versa) is the one way a data value can reach a
//! message.
//!
//! # Bounded memory
//!
//! The input is read once. Text is handled a line at a time (1 MiB maximum);
//! tables keep at most `max_table_rows_analysed` rows and 8 MiB of them for the
//! whole-table checks, then stream. Findings are kept up to
//! [`Rules::max_cells_reported`] per rule; [`Report::counts`] stay exact.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, BufRead, BufReader, Read};
use std::sync::OnceLock;

use regex::bytes::{Regex, RegexSet};

/// The version string recorded with verdicts.
pub const VERSION: &str = "airlock-disclosure 1";

/// Bytes read up front to sniff the kind of file.
const SNIFF_BYTES: usize = 64 * 1024;
/// Bytes of the sniff inspected for NULs / invalid UTF-8.
const BINARY_SNIFF_BYTES: usize = 8 * 1024;
/// Records used to sniff a delimiter and to detect a header.
const SNIFF_RECORDS: usize = 50;
/// Cap on the bytes of table rows kept for whole-table checks.
const MAX_SAMPLE_BYTES: usize = 8 * 1024 * 1024;
/// Text lines longer than this are split.
const MAX_LINE_BYTES: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

/// Rules and thresholds, from `scanners/disclosure.toml` with per-tier
/// overrides from a policy. Every field has a default ([`Rules::default`]).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Frequency cells with `0 < n < threshold` are `small-cell`. Default 10.
    pub threshold: u64,
    /// Report zero frequency cells as `zero`. Default true.
    pub flag_zeros: bool,
    /// `zero` findings fail instead of needing review. Default false.
    pub zeros_fail: bool,
    /// Report negative frequency cells as `negative` (fail). Default true.
    pub flag_negatives: bool,
    /// Run the `class-disclosure` check. Default true.
    pub class_disclosure: bool,
    /// Run the `differencing` check. Default true.
    pub differencing: bool,
    /// Run the `small-denominator` check. Default true.
    pub small_denominators: bool,
    /// Report magnitude columns (mean, median, …) for review. Default true.
    pub magnitude_review: bool,
    /// More data rows than this is a `microdata-rows` finding. Default 1000.
    pub max_microdata_rows: u64,
    /// Minimum values in a column before `id-column` / value-based
    /// `date-of-birth` apply. Default 20.
    pub min_id_column_rows: u64,
    /// Run the identifier checks (text files, and table cells if
    /// `table_cell_identifiers`) and the id / dob / postcode column checks.
    /// Default true.
    pub identifiers: bool,
    /// Also run the text identifier checks on table cells of text columns.
    /// Default true.
    pub table_cell_identifiers: bool,
    /// Digit runs at least this long are `long-id`. Default 10.
    pub long_id_digits: usize,
    /// Locations kept per rule per file; counts stay exact. Default 1000.
    pub max_cells_reported: usize,
    /// Table rows kept for the whole-table checks. Default 10000.
    pub max_table_rows_analysed: usize,
    /// Cell values meaning "suppressed", compared case-insensitively after
    /// trimming; empty cells and `<N` are always suppressed.
    pub suppression_markers: Vec<String>,
    /// Row labels / column headers meaning "total", case-insensitive.
    pub total_labels: Vec<String>,
}

/// The keys of [`Rules`], for error messages naming unknown keys.
const RULE_KEYS: &[&str] = &[
    "threshold",
    "flag_zeros",
    "zeros_fail",
    "flag_negatives",
    "class_disclosure",
    "differencing",
    "small_denominators",
    "magnitude_review",
    "max_microdata_rows",
    "min_id_column_rows",
    "identifiers",
    "table_cell_identifiers",
    "long_id_digits",
    "max_cells_reported",
    "max_table_rows_analysed",
    "suppression_markers",
    "total_labels",
];

impl Default for Rules {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Rules {
            threshold: 10,
            flag_zeros: true,
            zeros_fail: false,
            flag_negatives: true,
            class_disclosure: true,
            differencing: true,
            small_denominators: true,
            magnitude_review: true,
            max_microdata_rows: 1000,
            min_id_column_rows: 20,
            identifiers: true,
            table_cell_identifiers: true,
            long_id_digits: 10,
            max_cells_reported: 1000,
            max_table_rows_analysed: 10_000,
            suppression_markers: s(&[
                "*",
                "**",
                "***",
                "[redacted]",
                "redacted",
                "[suppressed]",
                "suppressed",
                "na",
                "n/a",
                "nan",
                "null",
                "-",
                "--",
                "x",
                "[x]",
                "c",
                "[c]",
                "..",
                "~",
                "[low]",
            ]),
            total_labels: s(&[
                "total",
                "totals",
                "all",
                "sum",
                "grand total",
                "overall",
                "all persons",
                "all people",
            ]),
        }
    }
}

impl Rules {
    /// Parse scanners/disclosure.toml (the `kind` key is accepted and
    /// ignored). Unknown keys are an error naming the key.
    pub fn from_toml(text: &str) -> Result<Rules, String> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("disclosure rules: {e}"))?;
        table.remove("kind");
        Rules::from_table(table)
    }

    /// Apply a policy's per-tier override table (same keys, all optional) on
    /// top; unknown keys are an error naming the key.
    pub fn with_overrides(&self, overrides: &toml::Table) -> Result<Rules, String> {
        let mut base = match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => t,
            Ok(_) => return Err("disclosure rules: not a table".into()),
            Err(e) => return Err(format!("disclosure rules: {e}")),
        };
        for (k, v) in overrides {
            if !RULE_KEYS.contains(&k.as_str()) {
                return Err(format!("disclosure rules: unknown key `{k}`"));
            }
            base.insert(k.clone(), v.clone());
        }
        Rules::from_table(base)
    }

    fn from_table(table: toml::Table) -> Result<Rules, String> {
        if let Some(k) = table.keys().find(|k| !RULE_KEYS.contains(&k.as_str())) {
            return Err(format!("disclosure rules: unknown key `{k}`"));
        }
        let rules: Rules = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("disclosure rules: {e}"))?;
        if rules.long_id_digits < 4 {
            return Err("disclosure rules: `long_id_digits` must be at least 4".into());
        }
        if rules.max_table_rows_analysed == 0 {
            return Err("disclosure rules: `max_table_rows_analysed` must be at least 1".into());
        }
        Ok(rules)
    }
}

// ---------------------------------------------------------------------------
// Public result types
// ---------------------------------------------------------------------------

/// A verdict, ordered `Pass < Review < Fail`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Review,
    Fail,
}

/// Where a finding is. Rows, columns and lines are 1-based as a person reads
/// them: row 1 is the first data row after any header, column 1 the first
/// field; `Line.column` counts characters. ACRO's `cells` lists hold 0-based
/// `[row - 1, col - 1]` (see [`acro_results`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Location {
    Cell { row: u64, col: u64 },
    Row { row: u64 },
    Column { col: u64 },
    Line { line: u64, column: u64 },
    File,
}

/// One problem found. `message` never contains the flagged value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    /// One of the rule names of the module documentation.
    pub rule: String,
    /// `magnitude`, `unscannable` and (unless `zeros_fail`) `zero` are review;
    /// every other rule fails.
    pub status: Status,
    pub location: Location,
    pub message: String,
}

/// What [`check`] took the file for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Table,
    Text,
    Unscannable,
}

/// The result of checking one file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub kind: FileKind,
    /// The worst status of all findings (also those beyond the cap); pass if none.
    pub status: Status,
    /// At most `max_cells_reported` per rule.
    pub findings: Vec<Finding>,
    /// Exact number of findings per rule, even beyond `max_cells_reported`.
    pub counts: BTreeMap<String, u64>,
    /// Tables: data rows (header excluded). Text: lines. Unscannable: 0.
    pub rows: u64,
    /// Tables: columns (the widest row). Otherwise 0.
    pub columns: u64,
}

// ---------------------------------------------------------------------------
// Internal rule ids and the finding sink
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum R {
    SmallCell,
    Zero,
    Negative,
    ClassDisclosure,
    Differencing,
    SmallDenominator,
    Magnitude,
    MicrodataRows,
    IdColumn,
    DateOfBirth,
    PostcodeColumn,
    Email,
    NhsNumber,
    Postcode,
    Phone,
    IpAddress,
    LongId,
    Unscannable,
}

const ALL_RULES: [R; 18] = [
    R::SmallCell,
    R::Zero,
    R::Negative,
    R::ClassDisclosure,
    R::Differencing,
    R::SmallDenominator,
    R::Magnitude,
    R::MicrodataRows,
    R::IdColumn,
    R::DateOfBirth,
    R::PostcodeColumn,
    R::Email,
    R::NhsNumber,
    R::Postcode,
    R::Phone,
    R::IpAddress,
    R::LongId,
    R::Unscannable,
];

impl R {
    fn name(self) -> &'static str {
        match self {
            R::SmallCell => "small-cell",
            R::Zero => "zero",
            R::Negative => "negative",
            R::ClassDisclosure => "class-disclosure",
            R::Differencing => "differencing",
            R::SmallDenominator => "small-denominator",
            R::Magnitude => "magnitude",
            R::MicrodataRows => "microdata-rows",
            R::IdColumn => "id-column",
            R::DateOfBirth => "date-of-birth",
            R::PostcodeColumn => "postcode-column",
            R::Email => "email",
            R::NhsNumber => "nhs-number",
            R::Postcode => "postcode",
            R::Phone => "phone",
            R::IpAddress => "ip-address",
            R::LongId => "long-id",
            R::Unscannable => "unscannable",
        }
    }
    fn what(self) -> &'static str {
        match self {
            R::Email => "email address",
            R::NhsNumber => "NHS number",
            R::Postcode => "UK postcode",
            R::Phone => "phone number",
            R::IpAddress => "IP address",
            R::LongId => "long numeric identifier",
            _ => self.name(),
        }
    }
}

struct Sink {
    cap: usize,
    findings: Vec<Finding>,
    counts: [u64; ALL_RULES.len()],
    status: Status,
}

impl Sink {
    fn new(cap: usize) -> Sink {
        Sink {
            cap,
            findings: Vec::new(),
            counts: [0; ALL_RULES.len()],
            status: Status::Pass,
        }
    }

    /// Records a finding; the message is only built while under the cap.
    fn add(
        &mut self,
        rule: R,
        status: Status,
        location: Location,
        message: impl FnOnce() -> String,
    ) {
        let n = &mut self.counts[rule as usize];
        *n += 1;
        if status > self.status {
            self.status = status;
        }
        if (*n as usize) <= self.cap {
            self.findings.push(Finding {
                rule: rule.name().to_string(),
                status,
                location,
                message: message(),
            });
        }
    }

    fn report(self, kind: FileKind, rows: u64, columns: u64) -> Report {
        let counts = ALL_RULES
            .iter()
            .filter(|r| self.counts[**r as usize] > 0)
            .map(|r| (r.name().to_string(), self.counts[*r as usize]))
            .collect();
        Report {
            kind,
            status: self.status,
            findings: self.findings,
            counts,
            rows,
            columns,
        }
    }
}

// ---------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------

/// Checks one file, reading `reader` once, streaming, in bounded memory.
///
/// `name` is only a hint (a `.csv`/`.tsv` name lets a one-column file be a
/// table); the kind is sniffed from the content as the module documentation
/// describes.
pub fn check(name: &str, mut reader: impl Read, rules: &Rules) -> io::Result<Report> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut reader)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)?;
    let mut sink = Sink::new(rules.max_cells_reported);

    if let Some(what) = magic_kind(&head).or_else(|| binary_kind(&head)) {
        sink.add(R::Unscannable, Status::Review, Location::File, || {
            format!("{what}: cannot be checked automatically; needs manual review")
        });
        return Ok(sink.report(FileKind::Unscannable, 0, 0));
    }
    if head.starts_with(b"\xEF\xBB\xBF") {
        head.drain(..3);
    }
    let delimiter = sniff_delimiter(&head, name);
    let input = io::Cursor::new(head).chain(reader);
    match delimiter {
        Some(delim) => {
            let (rows, cols) = check_table(input, delim, rules, &mut sink)?;
            Ok(sink.report(FileKind::Table, rows, cols))
        }
        None => {
            let lines = check_text(input, rules, &mut sink)?;
            Ok(sink.report(FileKind::Text, lines, 0))
        }
    }
}

fn magic_kind(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "PNG image"),
        (b"\xFF\xD8\xFF", "JPEG image"),
        (b"GIF87a", "GIF image"),
        (b"GIF89a", "GIF image"),
        (b"II*\x00", "TIFF image"),
        (b"MM\x00*", "TIFF image"),
        (b"%PDF-", "PDF document"),
        (b"PK\x03\x04", "ZIP archive or office document"),
        (b"\x1F\x8B", "gzip file"),
        (b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", "OLE office document"),
    ];
    for (m, what) in MAGIC {
        if head.starts_with(m) {
            return Some(what);
        }
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some("WebP image");
    }
    let t = trim(head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head));
    let starts = |p: &[u8]| t.len() >= p.len() && t[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"<svg") {
        return Some("SVG image");
    }
    if starts(b"<?xml") || starts(b"<!doctype svg") {
        let window = &t[..t.len().min(4096)];
        if window.windows(4).any(|w| w.eq_ignore_ascii_case(b"<svg")) {
            return Some("SVG image");
        }
    }
    None
}

fn binary_kind(head: &[u8]) -> Option<&'static str> {
    let h = &head[..head.len().min(BINARY_SNIFF_BYTES)];
    if h.contains(&0) {
        return Some("binary file");
    }
    match std::str::from_utf8(h) {
        Ok(_) => None,
        // A character cut by the end of the window is fine.
        Err(e) if e.error_len().is_none() => None,
        Err(_) => Some("binary or non-UTF-8 file"),
    }
}

// ---------------------------------------------------------------------------
// Cell values
// ---------------------------------------------------------------------------

fn trim(b: &[u8]) -> &[u8] {
    let is_space = |c: &u8| c.is_ascii_whitespace();
    let start = b.iter().position(|c| !is_space(c)).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !is_space(c))
        .map_or(start, |p| p + 1);
    &b[start..end]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Val {
    Empty,
    Suppressed,
    Num { v: f64, int: bool },
    Text,
}

impl Val {
    fn int(self) -> Option<f64> {
        match self {
            Val::Num { v, int: true } => Some(v),
            _ => None,
        }
    }
    fn is_suppressed(self) -> bool {
        matches!(self, Val::Empty | Val::Suppressed)
    }
}

/// Parses a number: optional sign, digits with optional thousands separators,
/// optional fraction/exponent, optional trailing `%`. Returns (value,
/// integral). `b` must be trimmed.
fn parse_number(b: &[u8]) -> Option<(f64, bool)> {
    let b = b.strip_suffix(b"%").map(trim).unwrap_or(b);
    let (neg, s) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let mut int: u64 = 0;
    let mut digits = 0usize;
    let mut group = 0usize;
    let mut saw_comma = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_digit() {
            int = int.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            digits += 1;
            group += 1;
        } else if c == b',' && digits > 0 && (if saw_comma { group == 3 } else { group <= 3 }) {
            saw_comma = true;
            group = 0;
        } else {
            break;
        }
        i += 1;
    }
    if saw_comma && group != 3 {
        return None;
    }
    let sign = if neg { -1.0 } else { 1.0 };
    if i == s.len() {
        if digits == 0 {
            return None;
        }
        let v = if digits <= 18 { int as f64 } else { 1e18 };
        return Some((sign * v, true));
    }
    // Fraction and/or exponent: hand the rest to the standard parser.
    let rest = &s[i..];
    if !(rest[0] == b'.' || rest[0] == b'e' || rest[0] == b'E')
        || !rest
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    for &c in s.iter().filter(|c| **c != b',') {
        if n == buf.len() {
            return None;
        }
        buf[n] = c;
        n += 1;
    }
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    if text.starts_with('.') && digits == 0 && text.len() == 1 {
        return None;
    }
    let v: f64 = text.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    Some((sign * v, v.fract() == 0.0))
}

fn is_marker(b: &[u8], markers: &[String]) -> bool {
    if let Some(rest) = b
        .strip_prefix(b"<=")
        .or_else(|| b.strip_prefix("≤".as_bytes()))
        .or_else(|| b.strip_prefix(b"<"))
    {
        return parse_number(trim(rest)).is_some();
    }
    markers.iter().any(|m| m.as_bytes().eq_ignore_ascii_case(b))
}

fn parse_val(raw: &[u8], markers: &[String]) -> Val {
    let b = trim(raw);
    if b.is_empty() {
        return Val::Empty;
    }
    if matches!(b[0], b'0'..=b'9' | b'-' | b'+' | b'.') {
        if let Some((v, int)) = parse_number(b) {
            return Val::Num { v, int };
        }
    }
    if is_marker(b, markers) {
        Val::Suppressed
    } else {
        Val::Text
    }
}

fn has_digit(b: &[u8]) -> bool {
    b.iter().any(u8::is_ascii_digit)
}

fn is_year(v: f64) -> bool {
    v.fract() == 0.0 && (1900.0..=2100.0).contains(&v)
}

/// Lower-case alphanumeric words of a header (`mean_BMI (kg)` → mean, bmi, kg).
fn header_words(h: &str) -> Vec<String> {
    h.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

fn norm_label(b: &[u8]) -> String {
    String::from_utf8_lossy(trim(b))
        .trim_end_matches(':')
        .trim()
        .to_lowercase()
}

fn is_total_label(b: &[u8], labels: &[String]) -> bool {
    let l = norm_label(b);
    !l.is_empty()
        && (labels.iter().any(|t| t.eq_ignore_ascii_case(&l))
            || l.starts_with("total ")
            || l.starts_with("total_")
            || l.starts_with("all "))
}

/// A header made safe for messages: control characters dropped, at most 60
/// characters.
fn clean_header(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(trim(b));
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(60).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// Full dates: YYYY-MM-DD, YYYY/MM/DD, DD/MM/YYYY, DD-MM-YYYY, DD.MM.YYYY,
/// optionally followed by a time. Returns the year.
fn parse_date(b: &[u8]) -> Option<u32> {
    let b = trim(b);
    let end = b
        .iter()
        .position(|c| *c == b'T' || *c == b' ')
        .unwrap_or(b.len());
    let d = &b[..end];
    let parts: Vec<&[u8]> = d.split(|c| matches!(c, b'-' | b'/' | b'.')).collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.iter().all(u8::is_ascii_digit))
    {
        return None;
    }
    let num = |p: &[u8]| std::str::from_utf8(p).ok()?.parse::<u32>().ok();
    let (y, m, day) = if parts[0].len() == 4 {
        (num(parts[0])?, num(parts[1])?, num(parts[2])?)
    } else if parts[2].len() == 4 && parts[0].len() <= 2 {
        (num(parts[2])?, num(parts[1])?, num(parts[0])?)
    } else {
        return None;
    };
    if parts[1].len() > 2 || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    Some(y)
}

// ---------------------------------------------------------------------------
// Identifier patterns
// ---------------------------------------------------------------------------

struct Patterns {
    set: RegexSet,
    nhs: Regex,
    phone_uk: Regex,
    phone_intl: Regex,
    ipv4: Regex,
    postcode: Regex,
    email: Regex,
    ipv6: Regex,
    postcode_full: Regex,
}

const NHS_RE: &str = r"(?-u)\b(?:\d{3} \d{3} \d{4}|\d{3}-\d{3}-\d{4}|\d{10})\b";
const PHONE_UK_RE: &str =
    r"(?-u)(?:\+44[ \-]?(?:\(0\)[ \-]?)?|\b0)\d{2,4}[ \-]?\d{3,4}[ \-]?\d{3,4}\b";
const PHONE_INTL_RE: &str =
    r"(?-u)\+[1-9]\d{0,2}[ \-]?(?:\(\d{1,4}\)[ \-]?)?\d{1,5}(?:[ \-]?\d{2,5}){1,4}\b";
const IPV4_RE: &str = r"(?-u)\b(?:\d{1,3}\.){3}\d{1,3}\b";
const POSTCODE_BODY: &str = r"(?:GIR ?0AA|[A-PR-UWYZ](?:\d{1,2}|[A-HK-Y]\d{1,2}|\d[A-HJKPSTUW]|[A-HK-Y]\d[ABEHMNPRVWXY]) ?\d[ABD-HJLNP-UW-Z]{2})";

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let postcode = format!(r"(?-u)\b{POSTCODE_BODY}\b");
        let re = |s: &str| Regex::new(s).expect("built-in pattern");
        Patterns {
            set: RegexSet::new([
                NHS_RE,
                PHONE_UK_RE,
                PHONE_INTL_RE,
                IPV4_RE,
                postcode.as_str(),
            ])
            .expect("built-in patterns"),
            nhs: re(NHS_RE),
            phone_uk: re(PHONE_UK_RE),
            phone_intl: re(PHONE_INTL_RE),
            ipv4: re(IPV4_RE),
            postcode: re(&postcode),
            email: re(
                r"(?-u)[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b",
            ),
            ipv6: re(r"(?-u)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"),
            postcode_full: re(&format!(r"(?-u)^{POSTCODE_BODY}$")),
        }
    })
}

fn nhs_checksum_ok(digits: &[u8]) -> bool {
    if digits.len() != 10 {
        return false;
    }
    let sum: u32 = digits[..9]
        .iter()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * (10 - i as u32))
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    u32::from(digits[9] - b'0') == check
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    rule: R,
    start: usize,
    end: usize,
}

fn overlaps(hits: &[Hit], s: usize, e: usize) -> bool {
    hits.iter().any(|h| h.start < e && s < h.end)
}

/// Which identifier rules a scan may report.
#[derive(Clone, Copy)]
struct Mask {
    postcode: bool,
}

/// Finds identifiers in one line (or table cell). Hits are pushed to `out`
/// (cleared first), ordered by position.
fn scan_identifiers(line: &[u8], long_id_digits: usize, mask: Mask, out: &mut Vec<Hit>) {
    out.clear();
    let (mut any_digit, mut any_at, mut any_colon) = (false, false, false);
    for &c in line {
        any_digit |= c.is_ascii_digit();
        any_at |= c == b'@';
        any_colon |= c == b':';
    }
    if !any_digit && !any_at {
        return;
    }
    let p = patterns();
    if any_at {
        for m in p.email.find_iter(line) {
            out.push(Hit {
                rule: R::Email,
                start: m.start(),
                end: m.end(),
            });
        }
    }
    if !any_digit {
        return;
    }
    let matched = p.set.matches(line);
    for (idx, re) in [(1usize, &p.phone_uk), (2, &p.phone_intl)] {
        if !matched.matched(idx) {
            continue;
        }
        for m in re.find_iter(line) {
            let (s, e) = (m.start(), m.end());
            if s > 0 && line[s] == b'+' && (is_word(line[s - 1]) || line[s - 1] == b'+') {
                continue;
            }
            let digits = m.as_bytes().iter().filter(|c| c.is_ascii_digit()).count();
            let ok = if m.as_bytes().starts_with(b"+44") {
                let national =
                    digits - 2 - usize::from(m.as_bytes().windows(3).any(|w| w == b"(0)"));
                (9..=10).contains(&national)
            } else if m.as_bytes()[0] == b'+' {
                (9..=15).contains(&digits)
            } else {
                (10..=11).contains(&digits)
            };
            if ok && !overlaps(out, s, e) {
                out.push(Hit {
                    rule: R::Phone,
                    start: s,
                    end: e,
                });
            }
        }
    }
    if matched.matched(0) {
        for m in p.nhs.find_iter(line) {
            let digits: Vec<u8> = m
                .as_bytes()
                .iter()
                .copied()
                .filter(u8::is_ascii_digit)
                .collect();
            if nhs_checksum_ok(&digits) && !overlaps(out, m.start(), m.end()) {
                out.push(Hit {
                    rule: R::NhsNumber,
                    start: m.start(),
                    end: m.end(),
                });
            }
        }
    }
    if matched.matched(3) {
        for m in p.ipv4.find_iter(line) {
            let (s, e) = (m.start(), m.end());
            let dotted_before = s >= 2 && line[s - 1] == b'.' && line[s - 2].is_ascii_digit();
            let dotted_after =
                e + 1 < line.len() && line[e] == b'.' && line[e + 1].is_ascii_digit();
            if dotted_before || dotted_after {
                continue;
            }
            let octets: Vec<u32> = m
                .as_bytes()
                .split(|c| *c == b'.')
                .filter_map(|o| std::str::from_utf8(o).ok()?.parse().ok())
                .collect();
            if octets.len() != 4 || octets.iter().any(|o| *o > 255) {
                continue;
            }
            if octets[0] == 127 || octets.iter().all(|o| *o == 0) {
                continue;
            }
            if !overlaps(out, s, e) {
                out.push(Hit {
                    rule: R::IpAddress,
                    start: s,
                    end: e,
                });
            }
        }
    }
    if any_colon {
        for m in p.ipv6.find_iter(line) {
            let (s, e) = (m.start(), m.end());
            if (s > 0 && (is_word(line[s - 1]) || line[s - 1] == b':'))
                || (e < line.len() && (is_word(line[e]) || line[e] == b':' || line[e] == b'.'))
            {
                continue;
            }
            let t = m.as_bytes();
            let groups = t.split(|c| *c == b':').filter(|g| !g.is_empty()).count();
            if groups < 3 || !has_digit(t) {
                continue;
            }
            let ok = std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
                .is_some();
            if ok && !overlaps(out, s, e) {
                out.push(Hit {
                    rule: R::IpAddress,
                    start: s,
                    end: e,
                });
            }
        }
    }
    if mask.postcode && matched.matched(4) {
        for m in p.postcode.find_iter(line) {
            if !overlaps(out, m.start(), m.end()) {
                out.push(Hit {
                    rule: R::Postcode,
                    start: m.start(),
                    end: m.end(),
                });
            }
        }
    }
    // Long digit runs.
    let mut i = 0;
    while i < line.len() {
        if !line[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let s = i;
        while i < line.len() && line[i].is_ascii_digit() {
            i += 1;
        }
        let e = i;
        if e - s < long_id_digits {
            continue;
        }
        let word_before = s > 0 && is_word(line[s - 1]);
        let word_after = e < line.len() && is_word(line[e]);
        let fraction = s >= 2 && line[s - 1] == b'.' && line[s - 2].is_ascii_digit();
        let integer_part = e + 1 < line.len() && line[e] == b'.' && line[e + 1].is_ascii_digit();
        if word_before || word_after || fraction || integer_part || overlaps(out, s, e) {
            continue;
        }
        out.push(Hit {
            rule: R::LongId,
            start: s,
            end: e,
        });
    }
    out.sort_by_key(|h| h.start);
}

/// 1-based character column of byte offset `off`.
fn char_col(line: &[u8], off: usize) -> u64 {
    line[..off].iter().filter(|c| (**c & 0xC0) != 0x80).count() as u64 + 1
}

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

fn check_text(input: impl Read, rules: &Rules, sink: &mut Sink) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut carry: Vec<u8> = Vec::new();
    let mut hits = Vec::new();
    let mut line_no: u64 = 0;
    let mut col_off: u64 = 0;
    let mut handle = |line: &[u8], line_no: u64, col_off: u64, sink: &mut Sink| {
        if !rules.identifiers {
            return;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        scan_identifiers(
            line,
            rules.long_id_digits,
            Mask { postcode: true },
            &mut hits,
        );
        for h in hits.iter() {
            let column = col_off + char_col(line, h.start);
            sink.add(
                h.rule,
                Status::Fail,
                Location::Line {
                    line: line_no,
                    column,
                },
                || format!("{} at line {line_no}, column {column}", h.rule.what()),
            );
        }
    };
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            if !carry.is_empty() {
                line_no += 1;
                handle(&carry, line_no, col_off, sink);
            }
            break;
        }
        let n = buf.len();
        let mut start = 0;
        while let Some(p) = buf[start..].iter().position(|c| *c == b'\n') {
            let end = start + p;
            line_no += 1;
            if carry.is_empty() {
                handle(&buf[start..end], line_no, col_off, sink);
            } else {
                carry.extend_from_slice(&buf[start..end]);
                handle(&carry, line_no, col_off, sink);
                carry.clear();
            }
            col_off = 0;
            start = end + 1;
        }
        carry.extend_from_slice(&buf[start..]);
        reader.consume(n);
        if carry.len() > MAX_LINE_BYTES {
            // Split an over-long line at whitespace if possible.
            let cut = carry
                .iter()
                .rposition(u8::is_ascii_whitespace)
                .filter(|c| *c > carry.len() / 2)
                .unwrap_or(carry.len());
            handle(&carry[..cut], line_no + 1, col_off, sink);
            col_off += char_col(&carry, cut) - 1;
            carry.drain(..cut);
        }
    }
    Ok(line_no)
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

/// Returns the delimiter if the sample looks like a delimited table.
fn sniff_delimiter(head: &[u8], name: &str) -> Option<u8> {
    // Only complete lines, unless the whole file is in the sample.
    let sample = if head.len() >= SNIFF_BYTES {
        &head[..head.iter().rposition(|c| *c == b'\n')? + 1]
    } else {
        head
    };
    let lower = name.to_ascii_lowercase();
    let table_name = [".csv", ".tsv", ".tab", ".psv"]
        .iter()
        .any(|e| lower.ends_with(e));
    let mut best: Option<(u8, usize)> = None;
    for delim in [b'\t', b',', b';', b'|'] {
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(delim)
            .has_headers(false)
            .flexible(true)
            .from_reader(sample);
        let mut rec = csv::ByteRecord::new();
        let mut width = None;
        let mut records = 0;
        let mut consistent = true;
        let mut digit = false;
        while records < SNIFF_RECORDS {
            match rdr.read_byte_record(&mut rec) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    consistent = false;
                    break;
                }
            }
            records += 1;
            if *width.get_or_insert(rec.len()) != rec.len() {
                consistent = false;
                break;
            }
            digit |= rec.iter().any(has_digit);
        }
        let width = width.unwrap_or(0);
        if consistent
            && records >= 2
            && width >= 2
            && (digit || table_name)
            && best.is_none_or(|(_, w)| width > w)
        {
            best = Some((delim, width));
        }
    }
    match best {
        Some((d, _)) => Some(d),
        None if table_name && !sample.is_empty() => {
            Some(if lower.ends_with(".tsv") || lower.ends_with(".tab") {
                b'\t'
            } else {
                b','
            })
        }
        None => None,
    }
}

fn detect_header(sample: &[csv::ByteRecord], markers: &[String]) -> bool {
    let Some(first) = sample.first() else {
        return false;
    };
    let mut any_text = false;
    for cell in first.iter() {
        match parse_val(cell, markers) {
            Val::Num { v, .. } if !is_year(v) => return false,
            Val::Text | Val::Suppressed => any_text = true,
            _ => {}
        }
    }
    if !any_text {
        return false;
    }
    let rest = &sample[1..sample.len().min(SNIFF_RECORDS + 1)];
    if rest.is_empty() {
        return true;
    }
    for (j, cell) in first.iter().enumerate() {
        let top = parse_val(cell, markers);
        let (mut nonblank, mut num, mut digits, mut non_year) = (0, 0, 0, 0);
        for r in rest {
            let Some(c) = r.get(j) else { continue };
            match parse_val(c, markers) {
                Val::Empty | Val::Suppressed => continue,
                Val::Num { v, .. } => {
                    num += 1;
                    non_year += usize::from(!is_year(v));
                }
                Val::Text => {}
            }
            nonblank += 1;
            digits += usize::from(has_digit(c));
        }
        if nonblank == 0 {
            continue;
        }
        let top_text = matches!(top, Val::Text | Val::Suppressed);
        if top_text && num * 2 > nonblank {
            return true;
        }
        if top_text && !has_digit(cell) && digits * 2 > nonblank {
            return true;
        }
        if matches!(top, Val::Num { .. }) && num * 2 > nonblank && non_year > 0 {
            return true;
        }
    }
    false
}

/// How [`check`] lays out a file starting with `head` as a table, for views
/// (the UI preview) whose row numbers must agree with the findings: the
/// delimiter, sniffed from the first 64 KiB and `name` exactly as `check`
/// does (`delimiter` forces one instead), and whether the first record is a
/// header under `markers` (read from up to 51 records of `head`, after a
/// UTF-8 BOM). `None` when `check` would not take it for a table; magic bytes
/// and binary content are not looked at here.
pub fn table_layout(
    name: &str,
    head: &[u8],
    delimiter: Option<u8>,
    markers: &[String],
) -> Option<(u8, bool)> {
    let delim = match delimiter {
        Some(d) => d,
        None => {
            let sniff = &head[..head.len().min(SNIFF_BYTES)];
            sniff_delimiter(sniff.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(sniff), name)?
        }
    };
    let body = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let records: Vec<csv::ByteRecord> = csv::ReaderBuilder::new()
        .delimiter(delim)
        .has_headers(false)
        .flexible(true)
        .from_reader(body)
        .byte_records()
        .take(SNIFF_RECORDS + 1)
        .map_while(Result::ok)
        .collect();
    Some((delim, detect_header(&records, markers)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Non-numeric: labels, codes, dates, free text.
    Text,
    /// Numeric but not a count (floats, ids, years, ages…).
    Other,
    Frequency,
    Denominator,
    Percent,
    Magnitude,
    /// Nothing but empty / suppressed cells.
    Blank,
}

#[derive(Debug)]
struct Column {
    name: Option<String>,
    role: Role,
    total: bool,
    /// Run identifier checks on cells of this column.
    scan_cells: bool,
    /// Scan only cells with at least `long_id_digits` digits (integer columns).
    scan_long_only: bool,
    postcode_column: bool,
}

impl Column {
    fn label(&self, idx: usize) -> String {
        match &self.name {
            Some(n) if !n.is_empty() => format!("column {} ('{}')", idx + 1, n),
            _ => format!("column {}", idx + 1),
        }
    }
}

const MAGNITUDE_WORDS: &[&str] = &[
    "mean", "average", "avg", "median", "std", "stdev", "stddev", "sd", "variance", "min", "max",
    "minimum", "maximum", "iqr", "geomean",
];
const PERCENT_WORDS: &[&str] = &[
    "percent",
    "percentage",
    "pct",
    "rate",
    "rates",
    "proportion",
    "prevalence",
];
const DENOMINATOR_NAMES: &[&str] = &["denominator", "denom", "n", "total", "population", "pop"];
const NOT_COUNT_WORDS: &[&str] = &[
    "id",
    "year",
    "yr",
    "age",
    "code",
    "month",
    "week",
    "day",
    "date",
    "dob",
    "time",
    "postcode",
    "zip",
    "lat",
    "latitude",
    "lon",
    "lng",
    "longitude",
    "height",
    "weight",
    "bmi",
    "score",
    "index",
    "rank",
    "order",
    "seq",
    "sequence",
    "version",
    "identifier",
];
const ID_WORDS: &[&str] = &[
    "id",
    "identifier",
    "patient",
    "nhs",
    "mrn",
    "uuid",
    "guid",
    "pid",
    "person",
    "subject",
    "participant",
    "chi",
    "patientid",
    "personid",
];
const LABEL_CODE_WORDS: &[&str] = &[
    "code",
    "codes",
    "snomed",
    "icd",
    "icd10",
    "read",
    "ctv3",
    "region",
    "area",
    "lsoa",
    "msoa",
    "geography",
    "la",
    "lad",
    "ccg",
    "icb",
    "stp",
    "practice",
    "trust",
    "ods",
    "county",
    "ward",
    "category",
    "group",
];
const BIRTH_WORDS: &[&str] = &["dob", "birth", "born", "birthdate", "birthday", "yob"];
const EVENT_DATE_WORDS: &[&str] = &[
    "week",
    "month",
    "period",
    "start",
    "end",
    "admission",
    "admitted",
    "discharge",
    "event",
    "visit",
    "test",
    "death",
    "died",
    "diagnosis",
    "registration",
    "vaccination",
    "appointment",
    "index",
    "onset",
    "from",
    "to",
    "until",
    "updated",
    "created",
    "report",
    "reported",
];

fn any_word(words: &[String], list: &[&str]) -> bool {
    words.iter().any(|w| list.contains(&w.as_str()))
}

fn is_magnitude_header(h: &str) -> bool {
    let words = header_words(h);
    let lower = h.to_lowercase();
    any_word(&words, MAGNITUDE_WORDS)
        || lower.contains("standard deviation")
        || (words.iter().any(|w| w == "total") && words.iter().any(|w| w == "value"))
        || (words.iter().any(|w| w == "sum") && words.len() > 1)
}

fn is_percent_header(h: &str) -> bool {
    h.contains('%') || any_word(&header_words(h), PERCENT_WORDS)
}

/// Identifier-shaped value: 6+ digits, or 5–40 characters of letters and
/// digits (both) with optional `-` / `_`.
fn id_shaped(b: &[u8]) -> bool {
    if b.len() >= 6 && b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let letters = b.iter().any(u8::is_ascii_alphabetic);
    (5..=40).contains(&b.len())
        && letters
        && has_digit(b)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        && !is_ons_code(b)
}

/// ONS geography codes (E06000001, W02000123, …) are area labels.
fn is_ons_code(b: &[u8]) -> bool {
    b.len() == 9
        && matches!(b[0], b'E' | b'W' | b'S' | b'N' | b'K')
        && b[1..].iter().all(u8::is_ascii_digit)
}

fn is_full_postcode(b: &[u8]) -> bool {
    let b = trim(b);
    if !(5..=8).contains(&b.len()) {
        return false;
    }
    let up: Vec<u8> = b.to_ascii_uppercase();
    patterns().postcode_full.is_match(&up)
}

/// The analysed part of a table: kept rows, and whether they are all of it.
struct Sample {
    rows: Vec<csv::ByteRecord>,
    complete: bool,
}

fn csv_err(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
    }
}

fn check_table(
    input: impl Read,
    delim: u8,
    rules: &Rules,
    sink: &mut Sink,
) -> io::Result<(u64, u64)> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .from_reader(input);
    let markers = &rules.suppression_markers;
    let mut rec = csv::ByteRecord::new();
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut complete = true;
    // One extra row in case the first is a header.
    loop {
        if rows.len() > rules.max_table_rows_analysed || bytes > MAX_SAMPLE_BYTES {
            complete = false;
            break;
        }
        if !rdr.read_byte_record(&mut rec).map_err(csv_err)? {
            break;
        }
        bytes += rec.as_slice().len() + 16 * rec.len() + 64;
        rows.push(rec.clone());
    }
    let header = if detect_header(&rows, markers) {
        Some(rows.remove(0))
    } else {
        None
    };
    let sample = Sample { rows, complete };
    let width = sample
        .rows
        .iter()
        .map(|r| r.len())
        .chain(header.iter().map(|h| h.len()))
        .max()
        .unwrap_or(0);
    let mut cols = classify_columns(header.as_ref(), &sample, width, rules);

    whole_table_checks(&sample, &mut cols, rules, sink);

    let mut hits = Vec::new();
    let mut row: u64 = 0;
    let mut state = CellState { hits: &mut hits };
    for r in &sample.rows {
        row += 1;
        cell_checks(row, r, &cols, rules, sink, &mut state);
    }
    let more = !sample.complete;
    drop(sample);
    if more {
        while rdr.read_byte_record(&mut rec).map_err(csv_err)? {
            row += 1;
            cell_checks(row, &rec, &cols, rules, sink, &mut state);
        }
    }
    if row > rules.max_microdata_rows {
        let max = rules.max_microdata_rows;
        sink.add(R::MicrodataRows, Status::Fail, Location::File, || {
            format!(
                "table has more than {max} data rows: looks like record-level data (microdata), not an aggregate output"
            )
        });
    }
    Ok((row, width as u64))
}

fn classify_columns(
    header: Option<&csv::ByteRecord>,
    sample: &Sample,
    width: usize,
    rules: &Rules,
) -> Vec<Column> {
    let markers = &rules.suppression_markers;
    let mut cols: Vec<Column> = Vec::with_capacity(width);
    for j in 0..width {
        let name = header.and_then(|h| h.get(j)).map(clean_header);
        let (mut nonblank, mut num, mut ints, mut text) = (0usize, 0usize, 0usize, 0usize);
        let (mut id_like, mut years, mut leading_zero) = (0usize, 0usize, false);
        let mut first_vals: Vec<f64> = Vec::new();
        for r in &sample.rows {
            let raw = r.get(j).unwrap_or(b"");
            match parse_val(raw, markers) {
                Val::Empty | Val::Suppressed => continue,
                Val::Num { v, int } => {
                    num += 1;
                    if int {
                        ints += 1;
                        let t = trim(raw);
                        let digits = t.iter().filter(|c| c.is_ascii_digit()).count();
                        id_like += usize::from(digits >= 8);
                        leading_zero |=
                            t.len() >= 2 && t[0] == b'0' && t.iter().all(u8::is_ascii_digit);
                        years += usize::from(is_year(v));
                        if first_vals.len() < 64 {
                            first_vals.push(v);
                        }
                    }
                }
                Val::Text => text += 1,
            }
            nonblank += 1;
        }
        let words = name.as_deref().map(header_words).unwrap_or_default();
        let role = if nonblank == 0 {
            Role::Blank
        } else if text > 0 || num == 0 {
            Role::Text
        } else if name.as_deref().is_some_and(is_magnitude_header) {
            Role::Magnitude
        } else if name.as_deref().is_some_and(is_percent_header) {
            Role::Percent
        } else if ints < num
            || any_word(&words, NOT_COUNT_WORDS)
            || id_like > 0
            || leading_zero
            || (years == ints && ints >= 2)
            || (j == 0 && width > 1 && constant_step(&first_vals))
        {
            Role::Other
        } else {
            Role::Frequency
        };
        let total = name
            .as_deref()
            .is_some_and(|n| is_total_label(n.as_bytes(), &rules.total_labels));
        // Identifier checks on cells: text columns, and integer columns that
        // are not counts (a column of NHS numbers parses as integers).
        let scan_cells = rules.identifiers
            && rules.table_cell_identifiers
            && (role == Role::Text || (role == Role::Other && ints == num));
        cols.push(Column {
            name,
            role,
            total,
            scan_cells,
            scan_long_only: false,
            postcode_column: false,
        });
    }
    // Denominators pair with a percentage column.
    if cols.iter().any(|c| c.role == Role::Percent) {
        for c in cols.iter_mut() {
            let is_denom = c.name.as_deref().is_some_and(|n| {
                let l = n.trim().to_lowercase();
                DENOMINATOR_NAMES.contains(&l.as_str())
                    || any_word(&header_words(&l), &["denominator", "denom"])
            });
            if is_denom && matches!(c.role, Role::Frequency | Role::Other) {
                c.role = Role::Denominator;
                c.total = false;
            }
        }
    }
    for c in cols.iter_mut() {
        c.scan_cells &= matches!(c.role, Role::Text | Role::Other);
        c.scan_long_only = c.role == Role::Other;
    }
    cols
}

/// A first column rising by a constant positive step (1, 2, 3… or 0, 5, 10…)
/// is an index / band, not counts.
fn constant_step(v: &[f64]) -> bool {
    if v.len() < 3 {
        return false;
    }
    let step = v[1] - v[0];
    step > 0.0 && v.windows(2).all(|w| w[1] - w[0] == step)
}

struct CellState<'a> {
    hits: &'a mut Vec<Hit>,
}

/// Per-cell checks, applied to every data row of the file.
fn cell_checks(
    row: u64,
    rec: &csv::ByteRecord,
    cols: &[Column],
    rules: &Rules,
    sink: &mut Sink,
    st: &mut CellState,
) {
    let markers = &rules.suppression_markers;
    let thr = rules.threshold as f64;
    for (j, raw) in rec.iter().enumerate() {
        let Some(c) = cols.get(j) else { break };
        let col = j as u64 + 1;
        match c.role {
            Role::Frequency => {
                let Some(v) = parse_val(raw, markers).int() else {
                    continue;
                };
                if v > 0.0 && v < thr {
                    sink.add(
                        R::SmallCell,
                        Status::Fail,
                        Location::Cell { row, col },
                        || {
                            format!(
                                "frequency 0 < n < {} in row {row}, {}",
                                rules.threshold,
                                c.label(j)
                            )
                        },
                    );
                } else if v == 0.0 && rules.flag_zeros {
                    let status = if rules.zeros_fail {
                        Status::Fail
                    } else {
                        Status::Review
                    };
                    sink.add(R::Zero, status, Location::Cell { row, col }, || {
                        format!(
                            "zero frequency in row {row}, {}: check it is structural and does not reveal that no one in a group has an attribute",
                            c.label(j)
                        )
                    });
                } else if v < 0.0 && rules.flag_negatives {
                    sink.add(
                        R::Negative,
                        Status::Fail,
                        Location::Cell { row, col },
                        || format!("negative count in row {row}, {}", c.label(j)),
                    );
                }
            }
            Role::Denominator if rules.small_denominators => {
                let Some(v) = parse_val(raw, markers).int() else {
                    continue;
                };
                if v > 0.0 && v < thr {
                    sink.add(R::SmallDenominator, Status::Fail, Location::Cell { row, col }, || {
                        format!(
                            "denominator 0 < n < {} in row {row}, {}: the rate or percentage beside it is disclosive",
                            rules.threshold,
                            c.label(j)
                        )
                    });
                }
            }
            Role::Text | Role::Other if c.scan_cells => {
                if !cell_prefilter(raw, c.scan_long_only, rules.long_id_digits) {
                    continue;
                }
                scan_identifiers(
                    raw,
                    rules.long_id_digits,
                    Mask {
                        postcode: !c.postcode_column,
                    },
                    st.hits,
                );
                for h in st.hits.iter() {
                    sink.add(h.rule, Status::Fail, Location::Cell { row, col }, || {
                        format!("{} in row {row}, {}", h.rule.what(), c.label(j))
                    });
                }
            }
            _ => {}
        }
    }
}

/// Cheap test whether a table cell could hold an identifier.
fn cell_prefilter(raw: &[u8], long_only: bool, long_id_digits: usize) -> bool {
    let (mut digits, mut at, mut dot_colon, mut upper) = (0usize, false, false, false);
    for &c in raw {
        if c.is_ascii_digit() {
            digits += 1;
        } else if c == b'@' {
            at = true;
        } else if c == b'.' || c == b':' {
            dot_colon = true;
        } else if c.is_ascii_uppercase() {
            upper = true;
        }
    }
    if long_only {
        return digits >= long_id_digits.min(9);
    }
    at || digits >= 9 || (digits >= 4 && dot_colon) || (upper && digits >= 1)
}

fn whole_table_checks(sample: &Sample, cols: &mut [Column], rules: &Rules, sink: &mut Sink) {
    if rules.magnitude_review {
        for (j, c) in cols.iter().enumerate() {
            if c.role == Role::Magnitude {
                sink.add(R::Magnitude, Status::Review, Location::Column { col: j as u64 + 1 }, || {
                    format!(
                        "{} holds magnitude statistics (mean, median, extremes, …): review for dominance (p% / n,k rules) and the counts behind each value",
                        c.label(j)
                    )
                });
            }
        }
    }
    if rules.identifiers {
        for j in 0..cols.len() {
            column_identity_checks(j, sample, cols, rules, sink);
        }
    }
    if sample.complete
        && (sample.rows.len() as u64) <= rules.max_microdata_rows
        && (rules.class_disclosure || rules.differencing)
    {
        aggregate_checks(sample, cols, rules, sink);
    }
}

/// id-column, date-of-birth and postcode-column checks of column `j`.
fn column_identity_checks(
    j: usize,
    sample: &Sample,
    cols: &mut [Column],
    rules: &Rules,
    sink: &mut Sink,
) {
    let c = &cols[j];
    if matches!(
        c.role,
        Role::Blank | Role::Frequency | Role::Denominator | Role::Percent | Role::Magnitude
    ) {
        return;
    }
    let markers = &rules.suppression_markers;
    let values: Vec<&[u8]> = sample
        .rows
        .iter()
        .filter_map(|r| r.get(j))
        .map(trim)
        .filter(|v| !v.is_empty() && !is_marker(v, markers))
        .collect();
    if values.is_empty() {
        return;
    }
    let n = values.len();
    let words = c.name.as_deref().map(header_words).unwrap_or_default();
    let col = j as u64 + 1;

    // Postcodes.
    if c.role == Role::Text {
        let pcs = values.iter().filter(|v| is_full_postcode(v)).count();
        if pcs > 0 && pcs * 5 >= n * 4 {
            let label = c.label(j);
            sink.add(
                R::PostcodeColumn,
                Status::Fail,
                Location::Column { col },
                || format!("{label} holds full UK postcodes"),
            );
            cols[j].postcode_column = true;
            return;
        }
    }

    // Dates of birth.
    let years: Vec<u32> = values.iter().filter_map(|v| parse_date(v)).collect();
    let lower = c.name.as_deref().unwrap_or("").to_lowercase();
    let birth_header = any_word(&words, BIRTH_WORDS) || lower.contains("d.o.b");
    let event_header = any_word(&words, EVENT_DATE_WORDS);
    let by_header = birth_header && years.len() * 2 > n;
    let by_value = !birth_header
        && !event_header
        && n as u64 >= rules.min_id_column_rows
        && years.len() * 10 >= n * 9
        && years.iter().all(|y| (1900..=2030).contains(y))
        && years.iter().max().unwrap_or(&0) - years.iter().min().unwrap_or(&0) >= 10;
    if by_header || by_value {
        let label = c.label(j);
        sink.add(
            R::DateOfBirth,
            Status::Fail,
            Location::Column { col },
            || {
                if by_header {
                    format!("{label} holds dates of birth")
                } else {
                    format!("{label} holds full dates spread over decades, like dates of birth")
                }
            },
        );
        return;
    }

    // Identifiers.
    if (n as u64) < rules.min_id_column_rows || any_word(&words, LABEL_CODE_WORDS) {
        return;
    }
    let id_header = any_word(&words, ID_WORDS);
    let shaped = values.iter().all(|v| id_shaped(v));
    if !(shaped || id_header) {
        return;
    }
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(n);
    if values.iter().all(|v| seen.insert(v)) {
        let label = c.label(j);
        sink.add(R::IdColumn, Status::Fail, Location::Column { col }, || {
            format!("{label}: every value is distinct and identifier-like: looks like a record identifier")
        });
    }
}

/// Class disclosure and differencing over the frequency part of an aggregate table.
fn aggregate_checks(sample: &Sample, cols: &[Column], rules: &Rules, sink: &mut Sink) {
    let markers = &rules.suppression_markers;
    let freq: Vec<usize> = (0..cols.len())
        .filter(|j| cols[*j].role == Role::Frequency)
        .collect();
    if freq.is_empty() {
        return;
    }
    let n = sample.rows.len();
    let vals: Vec<Vec<Val>> = sample
        .rows
        .iter()
        .map(|r| {
            freq.iter()
                .map(|&j| parse_val(r.get(j).unwrap_or(b""), markers))
                .collect()
        })
        .collect();
    let mut total_col: Vec<bool> = freq.iter().map(|&j| cols[j].total).collect();

    // Total rows by label.
    let label_col = (0..cols.len()).find(|j| cols[*j].role == Role::Text);
    let mut total_rows: BTreeSet<usize> = BTreeSet::new();
    if let Some(lc) = label_col {
        for (r, rec) in sample.rows.iter().enumerate() {
            if is_total_label(rec.get(lc).unwrap_or(b""), &rules.total_labels) {
                total_rows.insert(r);
            }
        }
    }
    // Total columns by arithmetic.
    if !total_col.iter().any(|t| *t) && freq.len() >= 3 {
        for k in arithmetic_totals(&vals, freq.len()) {
            total_col[k] = true;
        }
    }
    // Total rows by arithmetic.
    let body_cols: Vec<usize> = (0..freq.len()).filter(|k| !total_col[*k]).collect();
    if total_rows.is_empty() && n >= 3 && !body_cols.is_empty() {
        let by_col: Vec<Vec<Val>> = body_cols
            .iter()
            .map(|&k| vals.iter().map(|row| row[k]).collect())
            .collect();
        for r in arithmetic_totals(&by_col, n) {
            total_rows.insert(r);
        }
    }
    let body_rows: Vec<usize> = (0..n).filter(|r| !total_rows.contains(r)).collect();
    let label = |k: usize| cols[freq[k]].label(freq[k]);

    if rules.differencing {
        let mut recoverable: BTreeMap<(usize, usize), String> = BTreeMap::new();
        // A total row: each column it totals.
        for &t in &total_rows {
            for (k, total) in vals[t].iter().enumerate() {
                if total.int().is_none() {
                    continue;
                }
                let supp: Vec<usize> = body_rows
                    .iter()
                    .copied()
                    .filter(|&r| vals[r][k].is_suppressed())
                    .collect();
                let all_known = body_rows
                    .iter()
                    .all(|&r| vals[r][k].is_suppressed() || vals[r][k].int().is_some());
                if supp.len() == 1 && all_known {
                    recoverable
                        .entry((supp[0], k))
                        .or_insert_with(|| format!("the total in row {}", t + 1));
                }
            }
        }
        // A total column: each row it totals.
        for tk in (0..freq.len()).filter(|k| total_col[*k]) {
            for (r, line) in vals.iter().enumerate() {
                if line[tk].int().is_none() {
                    continue;
                }
                let supp: Vec<usize> = body_cols
                    .iter()
                    .copied()
                    .filter(|&k| line[k].is_suppressed())
                    .collect();
                let all_known = body_cols
                    .iter()
                    .all(|&k| line[k].is_suppressed() || line[k].int().is_some());
                if supp.len() == 1 && all_known {
                    recoverable
                        .entry((r, supp[0]))
                        .or_insert_with(|| format!("the total in {}", label(tk)));
                }
            }
        }
        for ((r, k), from) in recoverable {
            let (row, col) = (r as u64 + 1, freq[k] as u64 + 1);
            sink.add(
                R::Differencing,
                Status::Fail,
                Location::Cell { row, col },
                || {
                    format!(
                    "suppressed cell in row {row}, {} can be recovered by subtraction from {from}",
                    label(k)
                )
                },
            );
        }
    }

    if rules.class_disclosure {
        let single_nonzero = |cells: &mut dyn Iterator<Item = Val>| {
            let (mut count, mut nonzero) = (0, 0);
            for v in cells {
                match v.int() {
                    Some(x) => {
                        count += 1;
                        nonzero += usize::from(x != 0.0);
                    }
                    None => return false,
                }
            }
            count >= 2 && nonzero == 1
        };
        if body_cols.len() >= 2 {
            for &r in &body_rows {
                if single_nonzero(&mut body_cols.iter().map(|&k| vals[r][k])) {
                    let row = r as u64 + 1;
                    sink.add(R::ClassDisclosure, Status::Fail, Location::Row { row }, || {
                        format!(
                            "row {row}: all of its frequency falls in a single column: everyone in this group shares one category (class disclosure)"
                        )
                    });
                }
            }
        }
        if body_rows.len() >= 2 {
            for &k in &body_cols {
                if single_nonzero(&mut body_rows.iter().map(|&r| vals[r][k])) {
                    let col = freq[k] as u64 + 1;
                    sink.add(R::ClassDisclosure, Status::Fail, Location::Column { col }, || {
                        format!(
                            "{}: all of its frequency falls in a single row: everyone in this category shares one group (class disclosure)",
                            label(k)
                        )
                    });
                }
            }
        }
    }
}

/// Which of `len` lines is the sum of the others. `m[position][line]`: for
/// total columns the positions are rows and the lines frequency columns; for
/// total rows the positions are body columns and the lines rows. A line is a
/// total when, at every position without suppressed cells, it equals the sum
/// of the other lines (at least 2 such positions; or 1 over 4+ other lines;
/// or 1 over 3+ other lines plus a position with suppressed cells) and, where
/// cells are suppressed, it is at least the sum of those shown.
fn arithmetic_totals(m: &[Vec<Val>], len: usize) -> Vec<usize> {
    let mut out = Vec::new();
    if len < 3 {
        return out;
    }
    // Per position: sum of shown integers, number suppressed, and whether any
    // value is neither.
    let stats: Vec<(f64, usize, bool)> = m
        .iter()
        .map(|p| {
            let mut sum = 0.0;
            let mut supp = 0;
            let mut odd = false;
            for v in p {
                match v {
                    v if v.is_suppressed() => supp += 1,
                    Val::Num { v, int: true } => sum += v,
                    _ => odd = true,
                }
            }
            (sum, supp, odd)
        })
        .collect();
    for t in 0..len {
        let mut verified = 0;
        let mut consistent = 0;
        let mut ok = true;
        let mut nonzero = false;
        for (p, &(sum, supp, odd)) in m.iter().zip(&stats) {
            let Some(vt) = p.get(t).and_then(|v| v.int()) else {
                ok = false;
                break;
            };
            if odd {
                ok = false;
                break;
            }
            let others = sum - vt;
            if supp == 0 {
                if vt != others {
                    ok = false;
                    break;
                }
                verified += 1;
            } else if vt < others {
                ok = false;
                break;
            } else {
                consistent += 1;
            }
            nonzero |= vt != 0.0;
        }
        let others = len - 1;
        if ok
            && nonzero
            && (verified >= 2
                || (verified == 1 && (others >= 4 || (others >= 3 && consistent >= 1))))
        {
            out.push(t);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// ACRO-compatible results
// ---------------------------------------------------------------------------

/// ACRO's summary/cells key for one of our rules (ACRO names where one exists).
fn acro_key(rule: &str) -> &str {
    match rule {
        "small-cell" => "threshold",
        other => other,
    }
}

/// ACRO-compatible `results.json` over many files.
///
/// Shape: `{"version": VERSION, "results": {"<path>": {"uid", "status",
/// "type", "properties", "command", "summary", "outcome", "files": [{"name",
/// "sdc": {"summary": {...}, "cells": {...}, "locations": {...}}}],
/// "comments": [], "exception": ""}}}`.
///
/// `sdc.summary` has ACRO's keys — `suppressed` (always false: we check, we
/// do not suppress), `threshold` (our `small-cell` count), `negative`,
/// `missing`, `p-ratio`, `nk-rule`, `all-values-are-same` (always 0: they
/// need the underlying records; magnitude tables get our `magnitude` review
/// instead) — and beside them a count for each of our other rules (0 when
/// none). `sdc.cells` maps the same keys to the cell findings kept, as
/// 0-based `[row - 1, col - 1]` (0-based data row, 0-based file column
/// including any label column). Findings located at a row, column, text line
/// or the whole file are listed under `sdc.locations`, keyed by our rule
/// name, as [`Location`] objects.
pub fn acro_results<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a Report)>,
) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut results = Map::new();
    for (path, report) in files {
        let mut summary = Map::new();
        summary.insert("suppressed".into(), json!(false));
        let mut cells = Map::new();
        for key in [
            "threshold",
            "p-ratio",
            "nk-rule",
            "all-values-are-same",
            "negative",
            "missing",
        ] {
            summary.insert(key.into(), json!(0));
            cells.insert(key.into(), json!([]));
        }
        for r in ALL_RULES {
            let key = acro_key(r.name());
            let count = report.counts.get(r.name()).copied().unwrap_or(0);
            summary.insert(key.into(), json!(count));
            cells.entry(key).or_insert_with(|| json!([]));
        }
        let mut locations: Map<String, Value> = Map::new();
        for f in &report.findings {
            match &f.location {
                Location::Cell { row, col } => {
                    if let Some(Value::Array(a)) = cells.get_mut(acro_key(&f.rule)) {
                        a.push(json!([row.saturating_sub(1), col.saturating_sub(1)]));
                    }
                }
                other => {
                    let entry = locations.entry(f.rule.clone()).or_insert_with(|| json!([]));
                    if let Value::Array(a) = entry {
                        a.push(serde_json::to_value(other).unwrap_or(Value::Null));
                    }
                }
            }
        }
        let status = serde_json::to_value(report.status).unwrap_or(Value::Null);
        let kind = serde_json::to_value(report.kind).unwrap_or(Value::Null);
        let status_word = status.as_str().unwrap_or("review").to_string();
        let mut text = String::new();
        for (rule, n) in &report.counts {
            text.push_str(&format!("{}: {n}; ", acro_key(rule)));
        }
        let summary_text = if text.is_empty() {
            status_word
        } else {
            format!("{status_word}; {}", text.trim_end())
        };
        results.insert(
            path.to_string(),
            json!({
                "uid": path,
                "status": status,
                "type": kind,
                "properties": {"method": VERSION, "rows": report.rows, "columns": report.columns},
                "command": "airlock disclosure check",
                "summary": summary_text,
                "outcome": {},
                "files": [{"name": path, "sdc": {"summary": summary, "cells": cells, "locations": locations}}],
                "comments": [],
                "exception": "",
            }),
        );
    }
    json!({"version": VERSION, "results": results})
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! corpus {
        ($name:literal) => {
            (
                $name,
                include_bytes!(concat!("../../tests/disclosure_corpus/", $name)) as &[u8],
            )
        };
    }

    /// Every corpus file, for the tests that go over all of them.
    const CORPUS: &[(&str, &[u8])] = &[
        corpus!("clean.csv"),
        corpus!("small_cells.csv"),
        corpus!("zeros.csv"),
        corpus!("negatives.csv"),
        corpus!("class_disclosure.csv"),
        corpus!("differencing_total_row.csv"),
        corpus!("differencing_total_col.csv"),
        corpus!("small_denominators.csv"),
        corpus!("magnitude.csv"),
        corpus!("microdata.csv"),
        corpus!("microdata_rows.csv"),
        corpus!("headerless.csv"),
        corpus!("table.tsv"),
        corpus!("semicolon.csv"),
        corpus!("quoted_thousands.csv"),
        corpus!("identifiers.txt"),
        corpus!("analysis.py"),
        corpus!("notebook.ipynb"),
        corpus!("image.png"),
        corpus!("report.pdf"),
    ];

    fn run(file: (&str, &[u8])) -> Report {
        check(file.0, file.1, &Rules::default()).expect("check")
    }

    fn cell(row: u64, col: u64) -> Location {
        Location::Cell { row, col }
    }

    fn line(line: u64, column: u64) -> Location {
        Location::Line { line, column }
    }

    /// (rule, location) of every finding.
    fn pairs(r: &Report) -> Vec<(String, Location)> {
        r.findings
            .iter()
            .map(|f| (f.rule.clone(), f.location.clone()))
            .collect()
    }

    fn of(r: &Report, rule: &str) -> Vec<Location> {
        r.findings
            .iter()
            .filter(|f| f.rule == rule)
            .map(|f| f.location.clone())
            .collect()
    }

    fn p(rule: &str, loc: Location) -> (String, Location) {
        (rule.to_string(), loc)
    }

    #[test]
    fn clean_table_passes() {
        let r = run(corpus!("clean.csv"));
        assert_eq!(r.kind, FileKind::Table);
        assert_eq!(r.status, Status::Pass);
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
        assert!(r.counts.is_empty());
        assert_eq!((r.rows, r.columns), (4, 3));
    }

    #[test]
    fn small_cell_is_named() {
        let r = run(corpus!("small_cells.csv"));
        assert_eq!(pairs(&r), vec![p("small-cell", cell(2, 3))]);
        assert_eq!(r.status, Status::Fail);
        assert_eq!(
            r.findings[0].message,
            "frequency 0 < n < 10 in row 2, column 3 ('deaths')"
        );
        assert_eq!(r.counts.get("small-cell"), Some(&1));
    }

    #[test]
    fn zeros_need_review_or_fail() {
        let r = run(corpus!("zeros.csv"));
        assert_eq!(pairs(&r), vec![p("zero", cell(2, 3))]);
        assert_eq!(r.findings[0].status, Status::Review);
        assert_eq!(r.status, Status::Review);
        let strict = Rules {
            zeros_fail: true,
            ..Rules::default()
        };
        let r = check("zeros.csv", corpus!("zeros.csv").1, &strict).unwrap();
        assert_eq!(r.status, Status::Fail);
        let off = Rules {
            flag_zeros: false,
            ..Rules::default()
        };
        let r = check("zeros.csv", corpus!("zeros.csv").1, &off).unwrap();
        assert_eq!(r.status, Status::Pass);
    }

    #[test]
    fn negatives_fail() {
        let r = run(corpus!("negatives.csv"));
        assert_eq!(pairs(&r), vec![p("negative", cell(1, 3))]);
        assert_eq!(r.status, Status::Fail);
    }

    #[test]
    fn class_disclosure_names_row_and_column() {
        let r = run(corpus!("class_disclosure.csv"));
        assert_eq!(
            of(&r, "class-disclosure"),
            vec![Location::Row { row: 1 }, Location::Column { col: 4 }]
        );
        assert_eq!(
            of(&r, "zero"),
            vec![cell(1, 2), cell(1, 4), cell(2, 4), cell(3, 4)]
        );
        assert_eq!(r.status, Status::Fail);
        assert_eq!(r.findings.len(), 6);
    }

    #[test]
    fn differencing_via_total_row() {
        let r = run(corpus!("differencing_total_row.csv"));
        assert_eq!(pairs(&r), vec![p("differencing", cell(2, 2))]);
        assert!(
            r.findings[0].message.contains("the total in row 4"),
            "{}",
            r.findings[0].message
        );
    }

    #[test]
    fn differencing_via_total_column() {
        let r = run(corpus!("differencing_total_col.csv"));
        assert_eq!(pairs(&r), vec![p("differencing", cell(1, 3))]);
        assert!(r.findings[0].message.contains("column 5 ('all')"));
    }

    #[test]
    fn differencing_via_arithmetic_total() {
        // No label: the last row is the sum of the others.
        let csv = "group,a,b\nP,120,135\nQ,<10,110\nR,240,251\nS,455,496\n";
        let r = check("t.csv", csv.as_bytes(), &Rules::default()).unwrap();
        assert_eq!(pairs(&r), vec![p("differencing", cell(2, 2))]);
        // Two suppressed cells in the column: not recoverable by subtraction alone.
        let csv = "group,a,b\nP,120,135\nQ,*,110\nR,*,251\nTotal,455,496\n";
        let r = check("t.csv", csv.as_bytes(), &Rules::default()).unwrap();
        assert!(of(&r, "differencing").is_empty(), "{:#?}", r.findings);
    }

    #[test]
    fn small_denominator() {
        let r = run(corpus!("small_denominators.csv"));
        assert_eq!(
            pairs(&r),
            vec![
                p("small-cell", cell(2, 2)),
                p("small-denominator", cell(2, 3))
            ]
        );
        assert!(r.findings[1].message.contains("('denominator')"));
    }

    #[test]
    fn magnitude_table_needs_review() {
        let r = run(corpus!("magnitude.csv"));
        assert_eq!(
            pairs(&r),
            vec![
                p("magnitude", Location::Column { col: 3 }),
                p("magnitude", Location::Column { col: 4 })
            ]
        );
        assert_eq!(r.status, Status::Review);
    }

    #[test]
    fn microdata_columns() {
        let r = run(corpus!("microdata.csv"));
        assert_eq!(
            pairs(&r),
            vec![
                p("id-column", Location::Column { col: 1 }),
                p("date-of-birth", Location::Column { col: 2 }),
                p("postcode-column", Location::Column { col: 3 }),
            ]
        );
        assert_eq!(r.rows, 25);
        // Under a stricter row limit the same file is also microdata.
        let strict = Rules {
            max_microdata_rows: 20,
            ..Rules::default()
        };
        let r = check("microdata.csv", corpus!("microdata.csv").1, &strict).unwrap();
        assert_eq!(of(&r, "microdata-rows"), vec![Location::File]);
    }

    #[test]
    fn microdata_too_many_rows() {
        let r = run(corpus!("microdata_rows.csv"));
        assert_eq!(pairs(&r), vec![p("microdata-rows", Location::File)]);
        assert_eq!(r.rows, 1200);
        assert_eq!(r.status, Status::Fail);
    }

    #[test]
    fn dob_by_value_without_header_hint() {
        let mut csv = String::from("ref,d\n");
        for i in 0..25 {
            csv.push_str(&format!(
                "x{},{:02}/{:02}/{}\n",
                i % 3,
                1 + i % 28,
                1 + i % 12,
                1940 + i * 2
            ));
        }
        let r = check("t.csv", csv.as_bytes(), &Rules::default()).unwrap();
        assert_eq!(of(&r, "date-of-birth"), vec![Location::Column { col: 2 }]);
        // Weekly dates of an aggregate series are not dates of birth.
        let mut csv = String::from("week_start,cases\n");
        for i in 0..25 {
            csv.push_str(&format!(
                "2021-{:02}-{:02},{}\n",
                1 + i % 12,
                1 + i % 28,
                100 + i
            ));
        }
        let r = check("t.csv", csv.as_bytes(), &Rules::default()).unwrap();
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
    }

    #[test]
    fn year_headers_crlf_and_bom() {
        let csv = "\u{feff}region,2019,2020,total\r\nNorth,120,4,124\r\nSouth,98,110,208\r\nEast,240,251,491\r\n";
        let r = check("t.csv", csv.as_bytes(), &Rules::default()).unwrap();
        assert_eq!(r.rows, 3);
        assert_eq!(pairs(&r), vec![p("small-cell", cell(1, 3))]);
        assert!(r.findings[0].message.contains("column 3 ('2020')"));
        // Arithmetic total column without a label: a suppressed cell beside it.
        let csv = "region,a,b,c,d\nNorth,120,*,30,250\nSouth,98,110,40,248\nEast,240,251,50,541\n";
        let r = check("t.csv", csv.as_bytes(), &Rules::default()).unwrap();
        assert_eq!(pairs(&r), vec![p("differencing", cell(1, 3))]);
    }

    #[test]
    fn headerless_csv() {
        let r = run(corpus!("headerless.csv"));
        assert_eq!(pairs(&r), vec![p("small-cell", cell(2, 3))]);
        assert_eq!(
            r.findings[0].message,
            "frequency 0 < n < 10 in row 2, column 3"
        );
        assert_eq!((r.rows, r.columns), (3, 3));
    }

    #[test]
    fn tsv() {
        let r = run(corpus!("table.tsv"));
        assert_eq!(r.kind, FileKind::Table);
        assert_eq!(pairs(&r), vec![p("small-cell", cell(2, 3))]);
    }

    #[test]
    fn semicolon_csv() {
        let r = run(corpus!("semicolon.csv"));
        assert_eq!(r.kind, FileKind::Table);
        assert_eq!(pairs(&r), vec![p("small-cell", cell(2, 3))]);
    }

    #[test]
    fn quoted_fields_with_thousands_separators() {
        let r = run(corpus!("quoted_thousands.csv"));
        assert_eq!(pairs(&r), vec![p("small-cell", cell(2, 2))]);
        assert!(r.findings[0].message.contains("('count a')"));
    }

    #[test]
    fn number_parsing() {
        let m = &Rules::default().suppression_markers;
        let num = |s: &str| parse_val(s.as_bytes(), m);
        assert_eq!(
            num(" 1,234 "),
            Val::Num {
                v: 1234.0,
                int: true
            }
        );
        assert_eq!(num("12,000,000"), Val::Num { v: 12e6, int: true });
        assert_eq!(num("-7"), Val::Num { v: -7.0, int: true });
        assert_eq!(num("5.0"), Val::Num { v: 5.0, int: true });
        assert_eq!(
            num("62.5%"),
            Val::Num {
                v: 62.5,
                int: false
            }
        );
        assert_eq!(num("1,23"), Val::Text);
        assert_eq!(num("0-17"), Val::Text);
        for s in [
            "",
            " ",
            "*",
            "[REDACTED]",
            "<7",
            "<10",
            "NA",
            "-",
            "x",
            "c",
            "≤5",
        ] {
            assert!(num(s).is_suppressed(), "{s:?}");
        }
    }

    #[test]
    fn identifiers_in_text() {
        let r = run(corpus!("identifiers.txt"));
        assert_eq!(r.kind, FileKind::Text);
        assert_eq!(
            pairs(&r),
            vec![
                p("email", line(2, 10)),
                p("nhs-number", line(3, 9)),
                p("postcode", line(4, 17)),
                p("phone", line(5, 6)),
                p("ip-address", line(6, 11)),
                p("long-id", line(7, 11)),
                p("phone", line(8, 8)),
                p("ip-address", line(9, 11)),
            ]
        );
        assert_eq!(r.rows, 11);
        assert_eq!(r.status, Status::Fail);
    }

    #[test]
    fn identifier_patterns() {
        let rules = Rules::default();
        let rules_of = |s: &str| {
            let mut hits = Vec::new();
            scan_identifiers(
                s.as_bytes(),
                rules.long_id_digits,
                Mask { postcode: true },
                &mut hits,
            );
            hits.iter().map(|h| h.rule.name()).collect::<Vec<_>>()
        };
        for pc in [
            "SW1A 1AA", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT", "EC1A 1BB", "GIR 0AA",
        ] {
            assert_eq!(rules_of(&format!("at {pc}.")), vec!["postcode"], "{pc}");
        }
        assert_eq!(
            rules_of("nhs 4010232137 and 401-023-2137"),
            vec!["nhs-number", "nhs-number"]
        );
        assert_eq!(rules_of("bad 4010232138"), vec!["long-id"]);
        assert_eq!(rules_of("bad 401 023 2138"), Vec::<&str>::new());
        assert_eq!(
            rules_of("ring 07700 900123 or +1 415 555 2671"),
            vec!["phone", "phone"]
        );
        assert_eq!(
            rules_of("v 1.2.3 and 256.1.1.1 and 1.2.3.4.5 and 127.0.0.1"),
            Vec::<&str>::new()
        );
        assert_eq!(rules_of("host 10.0.0.255"), vec!["ip-address"]);
        assert_eq!(rules_of("fe80::1ff:fe23:4567:890a"), vec!["ip-address"]);
        assert_eq!(
            rules_of("x = 0.12345678901234 and 1234567890.5"),
            Vec::<&str>::new()
        );
        assert_eq!(rules_of("sha a1234567890b"), Vec::<&str>::new());
        assert_eq!(rules_of("mail a.b-c@d.co.uk"), vec!["email"]);
    }

    #[test]
    fn python_script() {
        let r = run(corpus!("analysis.py"));
        assert_eq!(r.kind, FileKind::Text);
        assert_eq!(pairs(&r), vec![p("email", line(10, 20))]);
    }

    #[test]
    fn notebook() {
        let r = run(corpus!("notebook.ipynb"));
        assert_eq!(r.kind, FileKind::Text);
        assert_eq!(
            pairs(&r),
            vec![p("phone", line(12, 21)), p("phone", line(17, 27))]
        );
    }

    #[test]
    fn images_and_pdfs_are_unscannable() {
        for (file, what) in [
            (corpus!("image.png"), "PNG image"),
            (corpus!("report.pdf"), "PDF document"),
        ] {
            let r = run(file);
            assert_eq!(r.kind, FileKind::Unscannable);
            assert_eq!(r.status, Status::Review);
            assert_eq!(pairs(&r), vec![p("unscannable", Location::File)]);
            assert!(r.findings[0].message.starts_with(what));
        }
        let r = check("x.bin", &b"abc\x00def"[..], &Rules::default()).unwrap();
        assert_eq!(r.kind, FileKind::Unscannable);
        let r = check(
            "x.svg",
            &b"<?xml version=\"1.0\"?>\n<svg xmlns=\"x\"></svg>"[..],
            &Rules::default(),
        )
        .unwrap();
        assert_eq!(r.kind, FileKind::Unscannable);
        let r = check("x.txt", &b"\xff\xfe\xfa text"[..], &Rules::default()).unwrap();
        assert_eq!(r.kind, FileKind::Unscannable);
        let r = check("empty.csv", &b""[..], &Rules::default()).unwrap();
        assert_eq!(
            (r.kind, r.status, r.rows),
            (FileKind::Text, Status::Pass, 0)
        );
    }

    #[test]
    fn table_cells_get_identifier_checks() {
        let csv = "name,contact,count\nA,jane@example.org,25\nB,none,30\n";
        let r = check("t.csv", csv.as_bytes(), &Rules::default()).unwrap();
        assert_eq!(pairs(&r), vec![p("email", cell(1, 2))]);
        assert!(!r.findings[0].message.contains("jane"));
    }

    #[test]
    fn cap_keeps_counts_exact() {
        let mut csv = String::from("g,a,b\n");
        for i in 0..50 {
            csv.push_str(&format!("g{i},3,4\n"));
        }
        let rules = Rules {
            max_cells_reported: 5,
            ..Rules::default()
        };
        let r = check("t.csv", csv.as_bytes(), &rules).unwrap();
        assert_eq!(r.counts.get("small-cell"), Some(&100));
        assert_eq!(of(&r, "small-cell").len(), 5);
    }

    /// The raw value flagged by a finding, where it has one.
    fn flagged_values(name: &str, bytes: &[u8], f: &Finding) -> Vec<String> {
        let rules = Rules::default();
        let table = || -> Vec<Vec<String>> {
            let delim = sniff_delimiter(bytes, name).expect("table");
            let mut rdr = csv::ReaderBuilder::new()
                .delimiter(delim)
                .has_headers(false)
                .flexible(true)
                .from_reader(bytes);
            let recs: Vec<csv::ByteRecord> = rdr.byte_records().map(|r| r.unwrap()).collect();
            let skip = usize::from(detect_header(&recs, &rules.suppression_markers));
            recs[skip..]
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|c| String::from_utf8_lossy(trim(c)).into_owned())
                        .collect()
                })
                .collect()
        };
        match f.location {
            Location::Cell { row, col } => {
                vec![table()[row as usize - 1][col as usize - 1].clone()]
            }
            Location::Row { row } => table()[row as usize - 1].clone(),
            Location::Column { col } => table()
                .iter()
                .map(|r| r[col as usize - 1].clone())
                .collect(),
            Location::Line { line, column } => {
                let text = String::from_utf8_lossy(bytes);
                let l = text.lines().nth(line as usize - 1).unwrap();
                let start = l.char_indices().nth(column as usize - 1).unwrap().0;
                let mut hits = Vec::new();
                scan_identifiers(
                    l.as_bytes(),
                    rules.long_id_digits,
                    Mask { postcode: true },
                    &mut hits,
                );
                let h = hits
                    .iter()
                    .find(|h| h.start == start)
                    .expect("hit at the reported column");
                vec![l[h.start..h.end].to_string()]
            }
            Location::File => vec![],
        }
    }

    #[test]
    fn messages_never_contain_flagged_values() {
        let mut checked = 0;
        for &(name, bytes) in CORPUS {
            let r = check(name, bytes, &Rules::default()).unwrap();
            for f in &r.findings {
                // Numbers the message may legitimately hold: its location and the threshold.
                let mut rest = f.message.clone();
                let mut strip = vec!["0 < n < 10".to_string()];
                match f.location {
                    Location::Cell { row, col } => {
                        strip.push(format!("row {row}"));
                        strip.push(format!("column {col}"));
                    }
                    Location::Row { row } => strip.push(format!("row {row}")),
                    Location::Column { col } => strip.push(format!("column {col}")),
                    Location::Line { line, column } => {
                        strip.push(format!("line {line}"));
                        strip.push(format!("column {column}"));
                    }
                    Location::File => {}
                }
                strip.extend(
                    f.message
                        .split('\'')
                        .skip(1)
                        .step_by(2)
                        .map(|h| format!("'{h}'")),
                );
                strip.push("the total in row 4".into());
                for s in &strip {
                    rest = rest.replace(s.as_str(), "");
                }
                for v in flagged_values(name, bytes, f) {
                    if v.is_empty() {
                        continue;
                    }
                    checked += 1;
                    assert!(
                        !f.message.contains(&v) || v.len() < 3,
                        "{name}: {:?} leaks {v:?}",
                        f.message
                    );
                    assert!(!rest.contains(&v), "{name}: {:?} leaks {v:?}", f.message);
                }
            }
        }
        assert!(checked > 100, "only {checked} values checked");
    }

    /// Generates a CSV on the fly: header, then `rows` rows; every 1000th row
    /// has a small cell.
    struct GenCsv {
        row: u64,
        rows: u64,
        pending: Vec<u8>,
        pos: usize,
        produced: u64,
    }

    impl Read for GenCsv {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.pending.len() {
                self.pending.clear();
                self.pos = 0;
                if self.row == 0 {
                    self.pending
                        .extend_from_slice(b"region,count_a,count_b,value\n");
                }
                while self.pending.len() < 64 * 1024 && self.row < self.rows {
                    let i = self.row;
                    let a = if i % 1000 == 7 { 3 } else { 100 + i % 50 };
                    use std::io::Write;
                    writeln!(
                        self.pending,
                        "region {},{},{},{}.{}",
                        i % 97,
                        a,
                        200 + i % 13,
                        i % 1000,
                        i % 7
                    )
                    .unwrap();
                    self.row += 1;
                }
                if self.pending.is_empty() {
                    return Ok(0);
                }
            }
            let n = buf.len().min(self.pending.len() - self.pos);
            buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
            self.pos += n;
            self.produced += n as u64;
            Ok(n)
        }
    }

    #[cfg(target_os = "linux")]
    fn peak_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn streams_a_large_generated_csv_in_bounded_memory() {
        let rows = 2_200_000u64;
        let mut gen = GenCsv {
            row: 0,
            rows,
            pending: Vec::new(),
            pos: 0,
            produced: 0,
        };
        let r = check("big.csv", &mut gen, &Rules::default()).unwrap();
        assert!(
            gen.produced > 50_000_000,
            "generated {} bytes",
            gen.produced
        );
        assert_eq!(r.kind, FileKind::Table);
        assert_eq!(r.rows, rows);
        assert_eq!(r.columns, 4);
        assert_eq!(r.counts.get("small-cell"), Some(&(rows / 1000)));
        assert_eq!(r.counts.get("microdata-rows"), Some(&1));
        assert_eq!(r.counts.len(), 2, "{:?}", r.counts);
        assert_eq!(of(&r, "small-cell").len(), 1000);
        assert_eq!(of(&r, "small-cell")[0], cell(8, 2));
        // Process-wide peak, so generous for other tests running alongside:
        // keeping the 2.2 M rows as records would need several hundred MiB.
        #[cfg(target_os = "linux")]
        assert!(
            peak_rss_kib() < 256 * 1024,
            "peak RSS {} KiB",
            peak_rss_kib()
        );
    }

    #[test]
    fn shipped_toml_is_the_default() {
        let text = include_str!("../../scanners/disclosure.toml");
        assert!(
            text.lines()
                .find(|l| !l.starts_with('#') && !l.trim().is_empty())
                == Some("kind = \"disclosure\"")
        );
        assert_eq!(Rules::from_toml(text).unwrap(), Rules::default());
        // Every key is in the shipped file, and documented above it.
        for key in RULE_KEYS {
            assert!(text.contains(&format!("\n{key} = ")), "{key} missing");
        }
        let serialized = toml::Value::try_from(Rules::default()).unwrap();
        let keys: Vec<&str> = serialized
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = RULE_KEYS.to_vec();
        expected.sort();
        let mut got = keys.clone();
        got.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Rules::from_toml("kind = \"disclosure\"\nthreshhold = 7\n").unwrap_err();
        assert!(err.contains("threshhold"), "{err}");
        let over: toml::Table = "threshold = 7\nflag_zeros = false".parse().unwrap();
        let r = Rules::default().with_overrides(&over).unwrap();
        assert_eq!(
            (r.threshold, r.flag_zeros, r.differencing),
            (7, false, true)
        );
        let bad: toml::Table = "zeroes = true".parse().unwrap();
        let err = Rules::default().with_overrides(&bad).unwrap_err();
        assert!(err.contains("zeroes"), "{err}");
        assert!(Rules::from_toml("threshold = \"ten\"").is_err());
        // OpenSAFELY's threshold of 7 via an override.
        let r7 = Rules::default()
            .with_overrides(&"threshold = 7".parse().unwrap())
            .unwrap();
        let csv = "g,a,b\nP,8,20\nQ,30,40\n";
        assert!(check("t.csv", csv.as_bytes(), &r7)
            .unwrap()
            .findings
            .is_empty());
        assert_eq!(
            check("t.csv", csv.as_bytes(), &Rules::default())
                .unwrap()
                .counts
                .get("small-cell"),
            Some(&1)
        );
    }

    #[test]
    fn status_order() {
        assert!(Status::Pass < Status::Review && Status::Review < Status::Fail);
        assert_eq!(serde_json::to_value(Status::Review).unwrap(), "review");
        let loc = serde_json::to_value(cell(2, 3)).unwrap();
        assert_eq!(loc, serde_json::json!({"kind": "cell", "row": 2, "col": 3}));
    }

    #[test]
    fn acro_results_shape() {
        let small = run(corpus!("small_cells.csv"));
        let clean = run(corpus!("clean.csv"));
        let text = run(corpus!("identifiers.txt"));
        let png = run(corpus!("image.png"));
        let v = acro_results([
            ("out/small.csv", &small),
            ("out/clean.csv", &clean),
            ("out/notes.txt", &text),
            ("out/fig.png", &png),
        ]);
        assert_eq!(v["version"], VERSION);
        let res = &v["results"];
        assert_eq!(res.as_object().unwrap().len(), 4);
        let s = &res["out/small.csv"];
        assert_eq!(s["uid"], "out/small.csv");
        assert_eq!(s["status"], "fail");
        assert_eq!(s["type"], "table");
        assert_eq!(s["comments"], serde_json::json!([]));
        assert_eq!(s["exception"], "");
        let files = s["files"].as_array().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0]["name"], "out/small.csv");
        let sdc = &files[0]["sdc"];
        for key in [
            "suppressed",
            "threshold",
            "p-ratio",
            "nk-rule",
            "all-values-are-same",
            "negative",
            "missing",
            "zero",
            "differencing",
            "email",
        ] {
            assert!(sdc["summary"].get(key).is_some(), "summary.{key}");
        }
        assert_eq!(sdc["summary"]["suppressed"], false);
        assert_eq!(sdc["summary"]["threshold"], 1);
        assert_eq!(sdc["cells"]["threshold"], serde_json::json!([[1, 2]]));
        assert_eq!(sdc["cells"]["negative"], serde_json::json!([]));
        assert_eq!(res["out/clean.csv"]["status"], "pass");
        assert_eq!(res["out/clean.csv"]["summary"], "pass");
        let t = &res["out/notes.txt"];
        assert_eq!(t["type"], "text");
        assert_eq!(t["files"][0]["sdc"]["summary"]["email"], 1);
        assert_eq!(
            t["files"][0]["sdc"]["locations"]["email"],
            serde_json::json!([{"kind": "line", "line": 2, "column": 10}])
        );
        assert_eq!(res["out/fig.png"]["status"], "review");
        assert_eq!(res["out/fig.png"]["type"], "unscannable");
    }
}
