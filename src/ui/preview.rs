//! Safe previews of uploaded files, for the transfer page.
//!
//! A Referee or output checker must see what a file holds before deciding on
//! it, but the file is untrusted: an HTML page or an SVG with a `<script>` in
//! it must never run in the reviewer's session, and a browser must never be
//! given a chance to sniff uploaded bytes into markup. So previews never
//! execute or serve uploaded bytes as markup. This module only turns bytes
//! into plain values (strings and numbers) that our own templates render with
//! auto-escaping, inside an `<iframe sandbox="">` whose response carries
//! `Content-Security-Policy: sandbox`. It does no I/O: the caller reads the
//! first bytes of the file (at most `max_bytes + 1`) and hands them over.
//!
//! - [`sniff`] decides how to show a file: images by their magic bytes only
//!   (served as bytes with the detected type by the caller), SVG and HTML as
//!   text (their source), binary as nothing, tables as tables.
//! - [`table`] parses a delimited table the way `crate::scan::disclosure`
//!   does (same CSV reader settings, same delimiter sniff and header rule, via
//!   [`disclosure::table_layout`]), so that its 1-based data row and column
//!   numbers are the ones of the disclosure findings, which it attaches to
//!   their cells. It caps rows and bytes, says so, and summarises each
//!   column (min, max, missing, redacted, rounding).
//! - [`text`] decodes text lossily and caps it on a character boundary.
//!
//! Nothing here escapes anything: strings keep the file's text unchanged
//! (`<script>` stays `<script>`), and escaping is the template's job.

use std::collections::HashMap;

use crate::scan::disclosure::{self, Finding, Location, Rules};

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Bytes of the head inspected for NULs / invalid UTF-8 (as disclosure).
const BINARY_SNIFF_BYTES: usize = 8 * 1024;
/// Bytes of the head looked at for a leading markup tag.
const MARKUP_WINDOW: usize = 4 * 1024;

/// How to preview a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Kind {
    /// A delimited table with this delimiter: render [`table`].
    Table { delimiter: u8 },
    /// Text, code, and markup (HTML, SVG, XML) as source: render [`text`].
    Text,
    /// A raster image recognised by its magic bytes, with its MIME type.
    Image { mime: &'static str },
    /// Anything else: no preview.
    Binary,
}

/// Decides how to preview a file from its first bytes (at least 64 KiB when
/// the file has them; the table sniff looks at the first 64 KiB as the
/// disclosure checks do) and its path (only the name's extension is used).
///
/// In order:
/// 1. PNG, JPEG, GIF (87a/89a) and WebP (`RIFF....WEBP`) magic bytes →
///    [`Kind::Image`] (whatever the name).
/// 2. A NUL byte, or invalid UTF-8, in the first 8 KiB after a UTF-8 BOM (a
///    multi-byte character cut by the end of that window is fine) →
///    [`Kind::Binary`].
/// 3. Markup: after a BOM and white space the content starts with an HTML,
///    SVG or XML tag (`<!doctype`, `<?xml`, `<!--`, `<html`, `<svg`,
///    `<script`, …), or the name ends in `.html`, `.htm`, `.xhtml`,
///    `.shtml`, `.svg`, `.xml` → [`Kind::Text`], shown as source, even when
///    named `.png` or `.csv`.
/// 4. A table as `crate::scan::disclosure` sniffs it: one of `\t` `,` `;`
///    `|` gives every complete record the same field count ≥ 2 in ≥ 2 records
///    and some field has a digit (the most fields wins). A `.csv`, `.tsv`,
///    `.tab` or `.psv` name is always a table: the sniffed delimiter when one
///    qualifies (so a `;`-separated `.csv` is read as disclosure reads it),
///    else `,` (`\t` for `.tsv` / `.tab`).
/// 5. Otherwise [`Kind::Text`].
pub fn sniff(path: &str, head: &[u8]) -> Kind {
    if let Some(mime) = image_mime(head) {
        return Kind::Image { mime };
    }
    let body = head.strip_prefix(BOM).unwrap_or(head);
    if is_binary(body) {
        return Kind::Binary;
    }
    let name = path
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(path)
        .to_ascii_lowercase();
    let ext = |list: &[&str]| list.iter().any(|e| name.ends_with(e));
    if is_markup(body) || ext(&[".html", ".htm", ".xhtml", ".shtml", ".svg", ".xml"]) {
        return Kind::Text;
    }
    let markers = Rules::default().suppression_markers;
    match disclosure::table_layout(&name, head, None, &markers) {
        Some((delimiter, _)) => Kind::Table { delimiter },
        // An empty .csv: disclosure calls it text, but it is a table of nothing.
        None if ext(&[".tsv", ".tab"]) => Kind::Table { delimiter: b'\t' },
        None if ext(&[".csv", ".psv"]) => Kind::Table { delimiter: b',' },
        None => Kind::Text,
    }
}

fn image_mime(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xFF\xD8\xFF", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
    ];
    for (magic, mime) in MAGIC {
        if head.starts_with(magic) {
            return Some(mime);
        }
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    None
}

/// A NUL or invalid UTF-8 in the first 8 KiB; `body` has no BOM.
fn is_binary(body: &[u8]) -> bool {
    let window = &body[..body.len().min(BINARY_SNIFF_BYTES)];
    if window.contains(&0) {
        return true;
    }
    match std::str::from_utf8(window) {
        Ok(_) => false,
        // A character cut by the end of the window (or of the head) is fine.
        Err(e) => e.error_len().is_some(),
    }
}

/// Content that starts like HTML, SVG or XML; `body` has no BOM.
fn is_markup(body: &[u8]) -> bool {
    // Tags that open a markup document or that a browser would act on; a
    // table cell such as `<5` or `<NA>` is none of them.
    const TAGS: &[&[u8]] = &[
        b"!doctype",
        b"?xml",
        b"html",
        b"head",
        b"body",
        b"svg",
        b"script",
        b"style",
        b"meta",
        b"link",
        b"title",
        b"base",
        b"iframe",
        b"frameset",
        b"frame",
        b"object",
        b"embed",
        b"img",
        b"div",
        b"span",
        b"p",
        b"a",
        b"table",
        b"form",
        b"input",
        b"template",
        b"math",
        b"xsl:stylesheet",
        b"h1",
        b"h2",
        b"h3",
        b"h4",
        b"h5",
        b"h6",
        b"br",
        b"b",
        b"i",
        b"ul",
        b"ol",
        b"pre",
        b"noscript",
        b"section",
        b"main",
        b"header",
        b"nav",
    ];
    let t = trim(&body[..body.len().min(MARKUP_WINDOW)]);
    let Some(rest) = t.strip_prefix(b"<") else {
        return false;
    };
    if rest.starts_with(b"!--") {
        return true;
    }
    TAGS.iter().any(|tag| {
        rest.len() >= tag.len()
            && rest[..tag.len()].eq_ignore_ascii_case(tag)
            && rest
                .get(tag.len())
                .is_none_or(|c| c.is_ascii_whitespace() || matches!(c, b'>' | b'/'))
    })
}

/// How much [`table`] and [`text`] show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Caps {
    /// Data rows of a table (the header is not counted). Default 500.
    pub max_rows: usize,
    /// Bytes of the file read, BOM included. Default 1 MiB.
    pub max_bytes: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_rows: 500,
            max_bytes: 1024 * 1024,
        }
    }
}

/// A table preview. Rows are as in the file: ragged rows keep their own
/// number of cells (`columns` is the widest, header included), so a template
/// pads short rows itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Table {
    /// The header row, decided by disclosure's header rule, so row numbers
    /// agree with the findings.
    pub header: Option<Vec<String>>,
    pub rows: Vec<Row>,
    /// The widest row, header included.
    pub columns: usize,
    /// Why not all of the file is shown, e.g. "Showing the first 500 rows of
    /// at least 812 (1.0 MiB read).", and how many flagged cells that hides.
    pub truncated: Option<String>,
    /// One per column, over the rows shown.
    pub summary: Vec<ColumnSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// 1-based data row (the header is not counted), as findings' `Cell { row, .. }`.
    pub number: u64,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cell {
    /// The field as in the file (unquoted by the CSV reader, not trimmed,
    /// lossy UTF-8), never escaped here.
    pub text: String,
    /// The rule name(s) of the findings at this cell, e.g. "small-cell".
    pub flag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ColumnSummary {
    /// 1-based, like findings.
    pub column: usize,
    /// The header text (trimmed), or "column N".
    pub name: String,
    /// Numeric cells seen.
    pub numeric: u64,
    /// Of the numeric cells, compared numerically, as written in the file (trimmed).
    pub min: Option<String>,
    pub max: Option<String>,
    /// Empty (or blank) cells; cells a short row lacks are not counted.
    pub missing: u64,
    /// Suppression markers: `*`, `[REDACTED]`, `NA`, `-`, `x`, `c`, … (the
    /// defaults of disclosure's `Rules::suppression_markers`,
    /// case-insensitive), and `<N`, `<=N`, `≤N`.
    pub redacted: u64,
    /// "multiples of 10", "multiples of 5", "integers", "N decimal places",
    /// "1 decimal place", "mixed" or "not numeric".
    pub rounding: String,
}

/// Parses a table preview from the file's first bytes.
///
/// `bytes` are the file's first bytes; the caller reads at most
/// `caps.max_bytes + 1` of them, so that more than `max_bytes` means the file
/// is longer. Shown are at most `caps.max_rows` data rows, and only complete
/// records within the first `max_bytes` (a record cut by that limit is
/// dropped); `truncated` says which limit applied. `delimiter` is the one
/// [`sniff`] returned. `flags` maps a 1-based (data row, column), as in
/// disclosure's `Location::Cell`, to rule names (see [`cell_flags`]); flags
/// beyond the rows shown are counted in `truncated`. Never panics: ragged
/// rows, unbalanced quotes, invalid UTF-8 (lossy) and empty input all give a
/// table.
pub fn table(
    bytes: &[u8],
    delimiter: u8,
    caps: &Caps,
    flags: &HashMap<(u64, u64), String>,
) -> Table {
    let cut = bytes.len() > caps.max_bytes;
    let limit = bytes.len().min(caps.max_bytes);
    let bom = if bytes[..limit].starts_with(BOM) {
        3
    } else {
        0
    };
    let body = &bytes[bom..limit];

    // One pass over the complete records: keep the first max_rows + 1 (one
    // may be the header), count all.
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut rec = csv::ByteRecord::new();
    let mut kept: Vec<csv::ByteRecord> = Vec::new();
    let mut records: u64 = 0;
    let mut complete_end = 0usize;
    loop {
        let start = rdr.position().byte() as usize;
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) | Err(_) => break,
        }
        let end = (rdr.position().byte() as usize).min(body.len());
        if cut && end >= body.len() && !ends_record(&body[start.min(end)..end]) {
            // Cut by max_bytes in the middle of this record.
            break;
        }
        complete_end = end;
        records += 1;
        if kept.len() <= caps.max_rows {
            kept.push(rec.clone());
        }
    }

    let markers = Rules::default().suppression_markers;
    let has_header = records > 0
        && disclosure::table_layout("", &bytes[..bom + complete_end], Some(delimiter), &markers)
            .is_some_and(|(_, header)| header);
    let mut kept = kept.into_iter();
    let header: Option<Vec<String>> = if has_header {
        kept.next().map(|h| {
            h.iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect()
        })
    } else {
        None
    };
    let data_rows = records - u64::from(has_header);

    let rows: Vec<Row> = kept
        .take(caps.max_rows)
        .enumerate()
        .map(|(i, r)| {
            let number = i as u64 + 1;
            Row {
                number,
                cells: r
                    .iter()
                    .enumerate()
                    .map(|(j, f)| Cell {
                        text: String::from_utf8_lossy(f).into_owned(),
                        flag: flags.get(&(number, j as u64 + 1)).cloned(),
                    })
                    .collect(),
            }
        })
        .collect();
    let columns = rows
        .iter()
        .map(|r| r.cells.len())
        .chain(header.as_ref().map(Vec::len))
        .max()
        .unwrap_or(0);

    let shown = rows.len() as u64;
    let read = human_bytes(caps.max_bytes);
    let mut notes = Vec::new();
    if cut && shown == 0 {
        notes.push(format!(
            "No complete row in the first {read}; the file is longer."
        ));
    } else if cut && shown < data_rows {
        notes.push(format!(
            "Showing the first {} of at least {data_rows} ({read} read).",
            rows_phrase(shown)
        ));
    } else if cut {
        notes.push(format!(
            "Showing the first {}; the file is longer than the {read} read.",
            rows_phrase(shown)
        ));
    } else if shown < data_rows {
        notes.push(format!(
            "Showing the first {} of {data_rows}.",
            rows_phrase(shown)
        ));
    }
    let hidden = flags.keys().filter(|(row, _)| *row > shown).count();
    if hidden > 0 {
        notes.push(if hidden == 1 {
            "1 flagged cell is in rows not shown.".to_string()
        } else {
            format!("{hidden} flagged cells are in rows not shown.")
        });
    }
    let truncated = (!notes.is_empty()).then(|| notes.join(" "));

    let summary = (0..columns)
        .map(|j| summarise(j, header.as_deref(), &rows, &markers))
        .collect();
    Table {
        header,
        rows,
        columns,
        truncated,
        summary,
    }
}

/// Whether `raw`, the bytes of a record reaching the end of the bytes read,
/// ends with its terminator outside quotes (so it is complete).
fn ends_record(raw: &[u8]) -> bool {
    matches!(raw.last(), Some(b'\n' | b'\r')) && raw.iter().filter(|c| **c == b'"').count() % 2 == 0
}

fn rows_phrase(n: u64) -> String {
    if n == 1 {
        "1 row".to_string()
    } else {
        format!("{n} rows")
    }
}

fn human_bytes(n: usize) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f >= KIB * KIB {
        format!("{:.1} MiB", f / (KIB * KIB))
    } else if f >= KIB {
        format!("{:.1} KiB", f / KIB)
    } else if n == 1 {
        "1 byte".to_string()
    } else {
        format!("{n} bytes")
    }
}

/// A numeric cell: its value and the digits after its decimal point.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Num {
    v: f64,
    decimals: usize,
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &b[start..end]
}

/// A number as disclosure reads one: optional sign, digits with optional
/// thousands separators (`1,234`), optional fraction / exponent, optional
/// trailing `%`. `b` must be trimmed.
fn parse_number(b: &[u8]) -> Option<Num> {
    let b = b.strip_suffix(b"%").map(trim).unwrap_or(b);
    let (neg, s) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let (mut digits, mut group, mut saw_comma, mut i) = (0usize, 0usize, false, 0usize);
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_digit() {
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
    let rest = &s[i..];
    if rest.is_empty() {
        if digits == 0 {
            return None;
        }
    } else if !matches!(rest[0], b'.' | b'e' | b'E')
        || !rest
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let text: String = s
        .iter()
        .filter(|c| **c != b',')
        .map(|c| char::from(*c))
        .collect();
    if text == "." {
        return None;
    }
    let v: f64 = text.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    let decimals = rest
        .strip_prefix(b".")
        .map_or(0, |f| f.iter().take_while(|c| c.is_ascii_digit()).count());
    Some(Num {
        v: if neg { -v } else { v },
        decimals,
    })
}

/// What a cell holds, as disclosure classifies it.
enum Val {
    Empty,
    Redacted,
    Num(Num),
    Text,
}

fn classify(raw: &str, markers: &[String]) -> Val {
    let b = trim(raw.as_bytes());
    if b.is_empty() {
        return Val::Empty;
    }
    if matches!(b[0], b'0'..=b'9' | b'-' | b'+' | b'.') {
        if let Some(n) = parse_number(b) {
            return Val::Num(n);
        }
    }
    if let Some(rest) = b
        .strip_prefix(b"<=")
        .or_else(|| b.strip_prefix("≤".as_bytes()))
        .or_else(|| b.strip_prefix(b"<"))
    {
        if parse_number(trim(rest)).is_some() {
            return Val::Redacted;
        }
    }
    if markers.iter().any(|m| m.as_bytes().eq_ignore_ascii_case(b)) {
        Val::Redacted
    } else {
        Val::Text
    }
}

fn summarise(
    j: usize,
    header: Option<&[String]>,
    rows: &[Row],
    markers: &[String],
) -> ColumnSummary {
    let name = header
        .and_then(|h| h.get(j))
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .map_or_else(|| format!("column {}", j + 1), str::to_string);
    let (mut numeric, mut missing, mut redacted) = (0u64, 0u64, 0u64);
    let mut min: Option<(f64, &str)> = None;
    let mut max: Option<(f64, &str)> = None;
    let mut nums: Vec<Num> = Vec::new();
    for cell in rows.iter().filter_map(|r| r.cells.get(j)) {
        match classify(&cell.text, markers) {
            Val::Empty => missing += 1,
            Val::Redacted => redacted += 1,
            Val::Text => {}
            Val::Num(n) => {
                numeric += 1;
                let shown = cell.text.trim();
                if min.is_none_or(|(v, _)| n.v < v) {
                    min = Some((n.v, shown));
                }
                if max.is_none_or(|(v, _)| n.v > v) {
                    max = Some((n.v, shown));
                }
                nums.push(n);
            }
        }
    }
    ColumnSummary {
        column: j + 1,
        name,
        numeric,
        min: min.map(|(_, s)| s.to_string()),
        max: max.map(|(_, s)| s.to_string()),
        missing,
        redacted,
        rounding: rounding(&nums),
    }
}

/// Describes how a column's numbers are rounded. Zeros say nothing about
/// multiples, and a zero written without a decimal point nothing about
/// decimal places; `12.0` counts as the integer 12.
fn rounding(nums: &[Num]) -> String {
    if nums.is_empty() {
        return "not numeric".to_string();
    }
    if nums.iter().all(|n| n.v.fract() == 0.0) {
        let nonzero: Vec<f64> = nums.iter().map(|n| n.v).filter(|v| *v != 0.0).collect();
        let multiples = |m: f64| !nonzero.is_empty() && nonzero.iter().all(|v| v % m == 0.0);
        return if multiples(10.0) {
            "multiples of 10"
        } else if multiples(5.0) {
            "multiples of 5"
        } else {
            "integers"
        }
        .to_string();
    }
    let mut places = nums
        .iter()
        .filter(|n| !(n.v == 0.0 && n.decimals == 0))
        .map(|n| n.decimals);
    let first = places.next().unwrap_or(0);
    if places.all(|d| d == first) {
        match first {
            1 => "1 decimal place".to_string(),
            d => format!("{d} decimal places"),
        }
    } else {
        "mixed".to_string()
    }
}

/// The cell-level findings of a disclosure report as [`table`]'s `flags`:
/// (data row, column) → the rule names there, joined by ", ". Row, column,
/// line and file findings are left out (show them beside the table).
pub fn cell_flags(findings: &[Finding]) -> HashMap<(u64, u64), String> {
    let mut flags: HashMap<(u64, u64), String> = HashMap::new();
    for f in findings {
        if let Location::Cell { row, col } = f.location {
            let names = flags.entry((row, col)).or_default();
            if names.is_empty() {
                names.push_str(&f.rule);
            } else if !names.split(", ").any(|n| n == f.rule) {
                names.push_str(", ");
                names.push_str(&f.rule);
            }
        }
    }
    flags
}

/// A text preview: `text` is the file's text (lossy UTF-8, BOM removed),
/// never escaped here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TextPreview {
    pub text: String,
    /// e.g. "Showing the first 1.0 MiB of a longer file.", or None.
    pub truncated: Option<String>,
}

/// Decodes the file's first bytes as text for a `<pre>`: lossy UTF-8 (invalid
/// bytes become U+FFFD), a UTF-8 BOM removed, and, when there are more than
/// `caps.max_bytes` bytes, cut at `max_bytes` (BOM included) on a character
/// boundary, with a note.
pub fn text(bytes: &[u8], caps: &Caps) -> TextPreview {
    let cut = bytes.len() > caps.max_bytes;
    let body = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let skipped = bytes.len() - body.len();
    let mut end = caps.max_bytes.saturating_sub(skipped).min(body.len());
    // Back off to the start of a character the limit cuts (at most 3 bytes).
    let mut steps = 0;
    while end > 0 && end < body.len() && steps < 3 && (body[end] & 0xC0) == 0x80 {
        end -= 1;
        steps += 1;
    }
    TextPreview {
        text: String::from_utf8_lossy(&body[..end]).into_owned(),
        truncated: cut.then(|| {
            format!(
                "Showing the first {} of a longer file.",
                human_bytes(caps.max_bytes)
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_flags() -> HashMap<(u64, u64), String> {
        HashMap::new()
    }

    fn texts(r: &Row) -> Vec<&str> {
        r.cells.iter().map(|c| c.text.as_str()).collect()
    }

    fn tbl(csv: &str) -> Table {
        table(csv.as_bytes(), b',', &Caps::default(), &no_flags())
    }

    #[test]
    fn sniff_images_by_magic_bytes_only() {
        let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";
        assert_eq!(sniff("notes.txt", png), Kind::Image { mime: "image/png" });
        assert_eq!(
            sniff("a.jpg", b"\xFF\xD8\xFF\xE0\x00\x10JFIF"),
            Kind::Image { mime: "image/jpeg" }
        );
        assert_eq!(
            sniff("a", b"GIF87a\x01\x00"),
            Kind::Image { mime: "image/gif" }
        );
        assert_eq!(
            sniff("a", b"GIF89a\x01\x00"),
            Kind::Image { mime: "image/gif" }
        );
        assert_eq!(
            sniff("a.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 "),
            Kind::Image { mime: "image/webp" }
        );
        // RIFF but not WebP (a WAV), a truncated RIFF, and a .png that is not one.
        assert_eq!(
            sniff("a.webp", b"RIFF\x24\x00\x00\x00WAVEfmt "),
            Kind::Binary
        );
        assert_eq!(sniff("a.webp", b"RIFF"), Kind::Text);
        assert_eq!(sniff("fake.png", b"just words"), Kind::Text);
        assert_eq!(sniff("a.gif", b"GIF8"), Kind::Text);
    }

    #[test]
    fn svg_and_html_are_text() {
        let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
        assert_eq!(sniff("figure.png", svg), Kind::Text);
        assert_eq!(sniff("figure", svg), Kind::Text);
        let prolog = b"<?xml version=\"1.0\"?>\n<!-- made by R -->\n<svg><text>1,2</text></svg>";
        assert_eq!(sniff("plot.png", prolog), Kind::Text);
        let html = "\u{feff}  \n<!DOCTYPE html><html><body><script>alert(1)</script>1,2\n3,4</body></html>";
        assert_eq!(sniff("report.csv", html.as_bytes()), Kind::Text);
        assert_eq!(sniff("x", b"<HTML>\n<p>1,2</p>"), Kind::Text);
        assert_eq!(sniff("x", b"<!-- c -->\na,1\nb,2\n"), Kind::Text);
        assert_eq!(sniff("page.htm", b"a,1\nb,2\n"), Kind::Text);
        assert_eq!(sniff("icon.SVG", b"a,1\nb,2\n"), Kind::Text);
        // Cells that merely start with '<' are not markup.
        assert_eq!(
            sniff("t.csv", b"<NA>,1,2\n3,4,5\n"),
            Kind::Table { delimiter: b',' }
        );
        assert_eq!(sniff("t", b"<5,1\n3,4\n"), Kind::Table { delimiter: b',' });
    }

    #[test]
    fn binary_and_bom() {
        assert_eq!(sniff("x.csv", b"a,b\n1,\x002\n"), Kind::Binary);
        assert_eq!(sniff("x.txt", b"\xff\xfe\x00t\x00e"), Kind::Binary); // UTF-16
        assert_eq!(sniff("x.txt", b"caf\xe9 au lait"), Kind::Binary); // Latin-1
        assert_eq!(sniff("x.txt", b"\xEF\xBB\xBFhello"), Kind::Text);
        assert_eq!(
            sniff("x", b"\xEF\xBB\xBFa,b\n1,2\n3,4\n"),
            Kind::Table { delimiter: b',' }
        );
        // A character cut by the end of the head, or of the 8 KiB window.
        assert_eq!(sniff("x.txt", &"price: 5 €".as_bytes()[..11]), Kind::Text);
        let mut long = vec![b'a'; BINARY_SNIFF_BYTES - 1];
        long.extend_from_slice("é and more".as_bytes());
        assert_eq!(sniff("x.txt", &long), Kind::Text);
        // Only the first 8 KiB are looked at.
        let mut late = vec![b'a'; BINARY_SNIFF_BYTES + 10];
        late.push(0);
        assert_eq!(sniff("x.txt", &late), Kind::Text);
        // An invalid byte inside the window is binary.
        let mut bad = vec![b'a'; 100];
        bad.extend_from_slice(b"\xC3(");
        assert_eq!(sniff("x.txt", &bad), Kind::Binary);
        assert_eq!(sniff("empty", b""), Kind::Text);
    }

    #[test]
    fn sniff_tables_by_name() {
        let comma = Kind::Table { delimiter: b',' };
        let tab = Kind::Table { delimiter: b'\t' };
        assert_eq!(sniff("out/a.csv", b"region,count\nA,12\n"), comma);
        // One column: a table by name only.
        assert_eq!(sniff("out/one.CSV", b"name\nalice\nbob\n"), comma);
        assert_eq!(sniff("out/one.tsv", b"name\nalice\n"), tab);
        assert_eq!(sniff("out/one.tab", b"name\nalice\n"), tab);
        assert_eq!(sniff("out/t.tsv", b"region\tcount\nA\t12\n"), tab);
        assert_eq!(sniff("empty.csv", b""), comma);
        assert_eq!(sniff("empty.tsv", b""), tab);
        // As disclosure reads it: a ;-separated .csv is split on ';'.
        assert_eq!(
            sniff("eu.csv", b"region;rate\nA;1,5\nB;2,25\n"),
            Kind::Table { delimiter: b';' }
        );
    }

    #[test]
    fn sniff_tables_without_extension() {
        assert_eq!(
            sniff("out/results", b"region|count\nA|12\nB|30\n"),
            Kind::Table { delimiter: b'|' }
        );
        assert_eq!(
            sniff("out/results.txt", b"a\tb\tc\n1\t2\t3\n4\t5\t6\n"),
            Kind::Table { delimiter: b'\t' }
        );
        assert_eq!(
            sniff("out/results.dat", b"a;b\n1;2\n3;4\n"),
            Kind::Table { delimiter: b';' }
        );
        // Most fields wins: 3 by ',' beats 2 by ';'.
        assert_eq!(
            sniff("x", b"a,b;c,d\n1,2;3,4\n"),
            Kind::Table { delimiter: b',' }
        );
        // No digit, ragged, one record, code: text.
        assert_eq!(sniff("notes", b"Hello, world\nGood, bye\n"), Kind::Text);
        assert_eq!(sniff("notes", b"a,b\n1,2,3\n"), Kind::Text);
        assert_eq!(sniff("notes", b"a,1\n"), Kind::Text);
        assert_eq!(
            sniff(
                "analysis.py",
                b"import pandas as pd\nx = f(1, 2)\nprint(x)\n"
            ),
            Kind::Text
        );
    }

    #[test]
    fn header_detection_and_row_numbers() {
        let t = tbl("region,count\nNorth,12\nSouth,3\n");
        assert_eq!(
            t.header,
            Some(vec!["region".to_string(), "count".to_string()])
        );
        assert_eq!(t.rows.len(), 2);
        assert_eq!(
            (t.rows[0].number, texts(&t.rows[0])),
            (1, vec!["North", "12"])
        );
        assert_eq!(
            (t.rows[1].number, texts(&t.rows[1])),
            (2, vec!["South", "3"])
        );
        assert_eq!((t.columns, t.truncated.as_deref()), (2, None));
        // No header: the first row is data row 1.
        let t = tbl("North,12\nSouth,3\n");
        assert_eq!(t.header, None);
        assert_eq!(
            (t.rows[0].number, texts(&t.rows[0])),
            (1, vec!["North", "12"])
        );
        // Year headers; CRLF; BOM; a blank line is skipped (as disclosure does).
        let t = tbl("\u{feff}region,2019,2020\r\nA,10,20\r\n\r\nB,30,40\r\n");
        assert_eq!(t.header.as_ref().unwrap()[0], "region");
        assert_eq!(texts(&t.rows[1]), vec!["B", "30", "40"]);
        assert_eq!(t.rows[1].number, 2);
        // A single line of text is a header; a single numeric line is a row.
        let t = tbl("a,b");
        assert_eq!((t.header.is_some(), t.rows.len(), t.columns), (true, 0, 2));
        let t = tbl("1,2");
        assert_eq!((t.header, t.rows.len()), (None, 1));
    }

    #[test]
    fn flags_land_on_their_cells() {
        let mut flags = HashMap::new();
        flags.insert((2, 2), "small-cell".to_string());
        flags.insert((1, 3), "zero, negative".to_string());
        let t = table(
            b"region,count,other\nNorth,12,0\nSouth,3,40\n",
            b',',
            &Caps::default(),
            &flags,
        );
        let flagged: Vec<(u64, usize, &str, &str)> = t
            .rows
            .iter()
            .flat_map(|r| {
                r.cells.iter().enumerate().filter_map(move |(j, c)| {
                    c.flag
                        .as_deref()
                        .map(|f| (r.number, j + 1, c.text.as_str(), f))
                })
            })
            .collect();
        assert_eq!(
            flagged,
            vec![(1, 3, "0", "zero, negative"), (2, 2, "3", "small-cell")]
        );
        assert_eq!(t.truncated, None);
    }

    #[test]
    fn disclosure_findings_land_on_the_flagged_values() {
        // The real checks, through cell_flags: every small cell is a 1..9
        // value, whatever the header and blank lines do to numbering.
        let csv = "group,count_a,count_b\n\nA,25,3\nB,7,40\n\nC,30,50\nD,60,2\n";
        let report = disclosure::check("t.csv", csv.as_bytes(), &Rules::default()).expect("check");
        let flags = cell_flags(&report.findings);
        assert_eq!(flags.len(), 3, "{flags:?}");
        let t = table(csv.as_bytes(), b',', &Caps::default(), &flags);
        assert!(t.header.is_some());
        let flagged: Vec<&str> = t
            .rows
            .iter()
            .flat_map(|r| r.cells.iter())
            .filter(|c| c.flag.as_deref() == Some("small-cell"))
            .map(|c| c.text.as_str())
            .collect();
        assert_eq!(flagged, vec!["3", "7", "2"]);
        // Headerless, tab-separated, found by sniff.
        let tsv = "A\t25\t3\nB\t7\t40\nC\t30\t50\n";
        let Kind::Table { delimiter } = sniff("out/t", tsv.as_bytes()) else {
            panic!("not a table")
        };
        let report = disclosure::check("out/t", tsv.as_bytes(), &Rules::default()).unwrap();
        let t = table(
            tsv.as_bytes(),
            delimiter,
            &Caps::default(),
            &cell_flags(&report.findings),
        );
        assert!(t.header.is_none());
        assert_eq!(t.rows[0].cells[2].flag.as_deref(), Some("small-cell"));
        assert_eq!(t.rows[1].cells[1].flag.as_deref(), Some("small-cell"));
    }

    #[test]
    fn cell_flags_joins_rules_once() {
        let f = |rule: &str, location: Location| Finding {
            rule: rule.into(),
            status: disclosure::Status::Fail,
            location,
            message: String::new(),
        };
        let flags = cell_flags(&[
            f("small-cell", Location::Cell { row: 1, col: 2 }),
            f("email", Location::Cell { row: 1, col: 2 }),
            f("small-cell", Location::Cell { row: 1, col: 2 }),
            f("id-column", Location::Column { col: 1 }),
            f("class-disclosure", Location::Row { row: 1 }),
        ]);
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[&(1, 2)], "small-cell, email");
    }

    fn numbered(rows: usize) -> String {
        let mut s = String::from("id,value\n");
        for i in 1..=rows {
            s.push_str(&format!("r{i},{}\n", i * 7));
        }
        s
    }

    #[test]
    fn capped_by_rows() {
        let csv = numbered(10);
        let caps = Caps {
            max_rows: 3,
            ..Caps::default()
        };
        let mut flags = HashMap::new();
        flags.insert((2, 2), "small-cell".to_string());
        flags.insert((7, 2), "small-cell".to_string());
        let t = table(csv.as_bytes(), b',', &caps, &flags);
        assert_eq!(t.rows.len(), 3);
        assert_eq!(
            t.rows.iter().map(|r| r.number).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(texts(&t.rows[2]), vec!["r3", "21"]);
        assert_eq!(
            t.truncated.as_deref(),
            Some("Showing the first 3 rows of 10. 1 flagged cell is in rows not shown.")
        );
        assert_eq!(t.rows[1].cells[1].flag.as_deref(), Some("small-cell"));
        // Exactly max_rows rows: nothing to say.
        let caps = Caps {
            max_rows: 10,
            ..Caps::default()
        };
        assert_eq!(
            table(csv.as_bytes(), b',', &caps, &no_flags()).truncated,
            None
        );
        // The default caps.
        let t = tbl(&numbered(812));
        assert_eq!(t.rows.len(), 500);
        assert_eq!(t.rows[499].number, 500);
        assert_eq!(
            t.truncated.as_deref(),
            Some("Showing the first 500 rows of 812.")
        );
    }

    #[test]
    fn capped_by_bytes() {
        let csv = numbered(100); // "id,value\nr1,7\nr2,14\n…"
        let bytes = csv.as_bytes();
        // The caller reads max_bytes + 1 bytes; the limit falls inside "r5,35\n".
        let max_bytes = "id,value\nr1,7\nr2,14\nr3,21\nr4,28\nr5,3".len();
        let caps = Caps {
            max_rows: 500,
            max_bytes,
        };
        let t = table(&bytes[..max_bytes + 1], b',', &caps, &no_flags());
        assert_eq!(t.rows.len(), 4);
        assert_eq!(texts(&t.rows[3]), vec!["r4", "28"]);
        assert_eq!(
            t.truncated,
            Some(format!(
                "Showing the first 4 rows; the file is longer than the {max_bytes} bytes read."
            ))
        );
        // The limit right after a record's newline keeps that record.
        let max_bytes = "id,value\nr1,7\nr2,14\n".len();
        let caps = Caps {
            max_rows: 500,
            max_bytes,
        };
        let t = table(&bytes[..max_bytes + 1], b',', &caps, &no_flags());
        assert_eq!(t.rows.len(), 2);
        assert_eq!(texts(&t.rows[1]), vec!["r2", "14"]);
        // Both caps: rows counted within the bytes read.
        let csv = numbered(300);
        let bytes = csv.as_bytes();
        let caps = Caps {
            max_rows: 2,
            max_bytes: 1024 + 5,
        };
        let t = table(
            &bytes[..=caps.max_bytes.min(bytes.len() - 1)],
            b',',
            &caps,
            &no_flags(),
        );
        let kept = csv[..1029].matches('\n').count() - 1; // complete data rows
        assert_eq!(
            t.truncated,
            Some(format!(
                "Showing the first 2 rows of at least {kept} (1.0 KiB read)."
            ))
        );
        // One record longer than the limit: nothing shown, and said.
        let long = format!("a,b\n{},1\n", "x".repeat(100));
        let caps = Caps {
            max_rows: 10,
            max_bytes: 20,
        };
        let t = table(&long.as_bytes()[..21], b',', &caps, &no_flags());
        assert_eq!(t.rows.len(), 0);
        assert_eq!(
            t.truncated.as_deref(),
            Some("No complete row in the first 20 bytes; the file is longer.")
        );
        let caps = Caps {
            max_rows: 10,
            max_bytes: 2,
        };
        let t = table(&long.as_bytes()[..3], b',', &caps, &no_flags());
        assert_eq!((t.header, t.rows.len()), (None, 0));
        assert_eq!(
            t.truncated.as_deref(),
            Some("No complete row in the first 2 bytes; the file is longer.")
        );
    }

    #[test]
    fn every_cut_keeps_exactly_the_complete_records() {
        for eol in ["\n", "\r\n", "\r"] {
            let csv = numbered(12).replace('\n', eol);
            let bytes = csv.as_bytes();
            let term = eol.as_bytes()[0];
            for max_bytes in 0..=bytes.len() + 1 {
                let caps = Caps {
                    max_rows: 500,
                    max_bytes,
                };
                let input = &bytes[..bytes.len().min(max_bytes + 1)];
                let t = table(input, b',', &caps, &no_flags());
                let seen = &bytes[..bytes.len().min(max_bytes)];
                let records = seen.iter().filter(|c| **c == term).count();
                assert_eq!(
                    t.rows.len(),
                    records.saturating_sub(1),
                    "{eol:?} cut at {max_bytes}"
                );
                if let Some(last) = t.rows.last() {
                    let n = last.number as usize;
                    assert_eq!(texts(last), vec![format!("r{n}"), format!("{}", n * 7)]);
                }
                assert_eq!(
                    t.truncated.is_some(),
                    max_bytes < bytes.len(),
                    "{max_bytes}"
                );
            }
        }
    }

    #[test]
    fn cut_inside_a_quoted_field_drops_the_record() {
        let csv = "name,n\nA,1\n\"two\nlines\",2\nC,3\n";
        // Cut right after "two\n": the newline is inside quotes.
        let max_bytes = "name,n\nA,1\n\"two\n".len();
        let caps = Caps {
            max_rows: 500,
            max_bytes,
        };
        let t = table(&csv.as_bytes()[..max_bytes + 1], b',', &caps, &no_flags());
        assert_eq!(t.rows.len(), 1);
        assert_eq!(texts(&t.rows[0]), vec!["A", "1"]);
        assert!(t.truncated.is_some());
    }

    #[test]
    fn column_summary() {
        // By hand, over 6 data rows:
        //   area: text (a label "C" or "x" would count as redacted)
        //          → not numeric
        //   count: 10, 1,230, 20, 0, * , <5 → 4 numeric, min 0, max "1,230",
        //          redacted 2 (* and <5), multiples of 10 (zero ignored)
        //   rate: 1.25, 2.50, 0.75, (empty), 3.10, -1.05% → 5 numeric,
        //          min -1.05%, max 3.10, 1 missing, 2 decimal places
        //   mixed: 1, 2.5, NA, x, "  ", ≤3 → 2 numeric, mixed, 1 missing, 3 redacted
        let csv = "area,count,rate,mixed\n\
                   Leeds,10,1.25,1\n\
                   York,\"1,230\",2.50,2.5\n\
                   Hull,20,0.75,NA\n\
                   Bath,0,,x\n\
                   Ely,*,3.10,  \n\
                   Wells,<5, -1.05% ,≤3\n";
        let t = tbl(csv);
        assert_eq!(t.rows.len(), 6);
        let s = &t.summary;
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[0],
            ColumnSummary {
                column: 1,
                name: "area".into(),
                numeric: 0,
                min: None,
                max: None,
                missing: 0,
                redacted: 0,
                rounding: "not numeric".into(),
            }
        );
        assert_eq!(
            s[1],
            ColumnSummary {
                column: 2,
                name: "count".into(),
                numeric: 4,
                min: Some("0".into()),
                max: Some("1,230".into()),
                missing: 0,
                redacted: 2,
                rounding: "multiples of 10".into(),
            }
        );
        assert_eq!(
            s[2],
            ColumnSummary {
                column: 3,
                name: "rate".into(),
                numeric: 5,
                min: Some("-1.05%".into()),
                max: Some("3.10".into()),
                missing: 1,
                redacted: 0,
                rounding: "2 decimal places".into(),
            }
        );
        assert_eq!(
            s[3],
            ColumnSummary {
                column: 4,
                name: "mixed".into(),
                numeric: 2,
                min: Some("1".into()),
                max: Some("2.5".into()),
                missing: 1,
                redacted: 3,
                rounding: "mixed".into(),
            }
        );
        // Without a header, columns are named by number.
        let t = tbl("1,2\n3,4\n");
        assert_eq!(t.summary[1].name, "column 2");
    }

    fn round(values: &[&str]) -> String {
        let nums: Vec<Num> = values
            .iter()
            .map(|v| parse_number(v.as_bytes()).unwrap())
            .collect();
        rounding(&nums)
    }

    #[test]
    fn rounding_labels() {
        assert_eq!(round(&[]), "not numeric");
        assert_eq!(round(&["10", "20", "0", "-30"]), "multiples of 10");
        assert_eq!(round(&["10", "15", "0"]), "multiples of 5");
        assert_eq!(round(&["10", "12.0", "7"]), "integers");
        assert_eq!(round(&["10.0", "20.0"]), "multiples of 10");
        assert_eq!(round(&["0", "0"]), "integers");
        assert_eq!(round(&["1.25", "3.50", "0", "2.00"]), "2 decimal places");
        assert_eq!(round(&["1.5", "12.0"]), "1 decimal place");
        assert_eq!(round(&["1.5", "2.25"]), "mixed");
        assert_eq!(round(&["1.5", "2"]), "mixed");
        assert_eq!(round(&["1,234.5%", "2.5"]), "1 decimal place");
    }

    #[test]
    fn number_parsing() {
        let n = |s: &str| parse_number(trim(s.as_bytes())).map(|n| (n.v, n.decimals));
        assert_eq!(n(" 1,234 "), Some((1234.0, 0)));
        assert_eq!(n("12,000,000"), Some((12_000_000.0, 0)));
        assert_eq!(n("+12"), Some((12.0, 0)));
        assert_eq!(n("-3.50"), Some((-3.5, 2)));
        assert_eq!(n("12%"), Some((12.0, 0)));
        assert_eq!(n("12.5 %"), Some((12.5, 1)));
        assert_eq!(n("1.5e3"), Some((1500.0, 1)));
        assert_eq!(n(".5"), Some((0.5, 1)));
        for bad in [
            "", ".", "-", "+", "1,23", "1,2345", "12a", "abc", "1.2.3x", "%", "1e999",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ragged_rows() {
        let t = tbl("a,b,c\n1,2\n3,4,5,6\n");
        assert!(t.header.is_some());
        assert_eq!(t.columns, 4);
        assert_eq!(t.rows[0].cells.len(), 2);
        assert_eq!(t.rows[1].cells.len(), 4);
        assert_eq!(t.summary.len(), 4);
        assert_eq!(t.summary[3].name, "column 4");
        assert_eq!(t.summary[3].numeric, 1);
        assert_eq!(t.summary[2].missing, 0);
    }

    #[test]
    fn quoted_fields_with_commas_and_newlines() {
        let t = tbl(
            "name,desc,n\n\"Smith, J\",\"line 1\nline 2\",5\n\"say \"\"hi\"\"\",plain,\"1,234\"\n",
        );
        assert_eq!(t.rows.len(), 2);
        assert_eq!(texts(&t.rows[0]), vec!["Smith, J", "line 1\nline 2", "5"]);
        assert_eq!(texts(&t.rows[1]), vec!["say \"hi\"", "plain", "1,234"]);
        assert_eq!(t.rows[1].number, 2);
        assert_eq!(t.summary[2].max.as_deref(), Some("1,234"));
    }

    #[test]
    fn markup_in_cells_is_kept_literally() {
        let csv =
            "name,n\n<script>alert(1)</script>,12\n\"<img src=x onerror=alert(1)>\",3\n&amp;,4\n";
        let t = tbl(csv);
        assert_eq!(t.rows[0].cells[0].text, "<script>alert(1)</script>");
        assert_eq!(t.rows[1].cells[0].text, "<img src=x onerror=alert(1)>");
        assert_eq!(t.rows[2].cells[0].text, "&amp;");
        let p = text(b"<script>alert(1)</script>", &Caps::default());
        assert_eq!(p.text, "<script>alert(1)</script>");
    }

    #[test]
    fn odd_inputs_never_panic() {
        let t = tbl("");
        assert_eq!(
            (t.header, t.rows.len(), t.columns, t.truncated),
            (None, 0, 0, None)
        );
        assert!(t.summary.is_empty());
        let t = table(b"\xEF\xBB\xBF", b',', &Caps::default(), &no_flags());
        assert_eq!(t.rows.len(), 0);
        // Unbalanced quote: the rest of the file is one field.
        let t = tbl("a,n\n\"open,1\nb,2\n");
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.rows[0].cells[0].text, "open,1\nb,2\n");
        // Invalid UTF-8 is lossy.
        let t = table(b"a,n\nb\xff,12\n", b',', &Caps::default(), &no_flags());
        assert_eq!(t.rows[0].cells[0].text, "b\u{fffd}");
        // Zero caps, a BOM cut by the limit, flags at row 0.
        let mut flags = HashMap::new();
        flags.insert((0, 0), "x".to_string());
        for (max_rows, max_bytes) in [(0, 0), (0, 100), (5, 1), (5, 2), (5, 4)] {
            let caps = Caps {
                max_rows,
                max_bytes,
            };
            let t = table(b"\xEF\xBB\xBFa,n\nb,1\n", b',', &caps, &flags);
            assert!(t.rows.len() <= max_rows);
        }
        // Pseudo-random bytes from a small alphabet, many caps.
        let alphabet = b"ab1,;\t\"\n\r \xff\xc3<%-.";
        let mut x: u64 = 0x2545F4914F6CDD1D;
        for round in 0..400 {
            let len = (round * 7) % 300;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let caps = Caps {
                max_rows: round % 7,
                max_bytes: round % 280,
            };
            for delim in [b',', b'\t', b';'] {
                let input = &bytes[..bytes.len().min(caps.max_bytes + 1)];
                let t = table(input, delim, &caps, &no_flags());
                assert!(t.rows.len() <= caps.max_rows);
                for (i, r) in t.rows.iter().enumerate() {
                    assert_eq!(r.number, i as u64 + 1);
                    assert!(r.cells.len() <= t.columns);
                }
                assert_eq!(t.summary.len(), t.columns);
            }
            let _ = sniff("x", &bytes);
            let p = text(&bytes, &caps);
            assert!(p.text.len() <= caps.max_bytes.max(1) * 3);
        }
    }

    #[test]
    fn text_is_cut_on_a_char_boundary() {
        let caps = |max_bytes| Caps {
            max_rows: 500,
            max_bytes,
        };
        // "é" is 2 bytes: a limit of 3 cuts the second one, so only one is shown.
        let p = text("ééé".as_bytes(), &caps(3));
        assert_eq!(p.text, "é");
        assert_eq!(
            p.truncated.as_deref(),
            Some("Showing the first 3 bytes of a longer file.")
        );
        assert_eq!(text("ééé".as_bytes(), &caps(4)).text, "éé");
        // A 4-byte character, cut at each of its bytes.
        for max in 1..4 {
            assert_eq!(text("😀x".as_bytes(), &caps(max)).text, "");
        }
        assert_eq!(text("😀x".as_bytes(), &caps(4)).text, "😀");
        // Whole file: no note, BOM stripped (and counted in the limit).
        let p = text("\u{feff}héllo\n".as_bytes(), &caps(100));
        assert_eq!((p.text.as_str(), p.truncated), ("héllo\n", None));
        let p = text("\u{feff}héllo".as_bytes(), &caps(6));
        assert_eq!(p.text, "hé");
        // Lossy.
        assert_eq!(text(b"a\xffb", &caps(100)).text, "a\u{fffd}b");
        assert_eq!(text(b"", &caps(0)).text, "");
        let p = text(b"abc", &caps(0));
        assert_eq!((p.text.as_str(), p.truncated.is_some()), ("", true));
        // The default cap, in MiB.
        let big = vec![b'a'; 1024 * 1024 + 1];
        let p = text(&big, &Caps::default());
        assert_eq!(p.text.len(), 1024 * 1024);
        assert_eq!(
            p.truncated.as_deref(),
            Some("Showing the first 1.0 MiB of a longer file.")
        );
    }

    fn serializable<T: serde::Serialize>() {}

    #[test]
    fn types_serialize() {
        serializable::<Kind>();
        serializable::<Caps>();
        serializable::<Table>();
        serializable::<TextPreview>();
        assert_eq!(
            Caps::default(),
            Caps {
                max_rows: 500,
                max_bytes: 1 << 20
            }
        );
    }
}
