//! Invoice export data (`export_data`), its validation, and its quality score.
//!
//! `export_data` is a JSON object:
//!
//! ```json
//! { "vendor_name": "Acme", "invoice_number": "INV-1001", "invoice_date": "2026-10-31",
//!   "currency": "EUR", "total_amount": "30.00",
//!   "line_items": [ { "description": "Widget", "quantity": 3,
//!                     "unit_price": "10.00", "amount": "30.00" } ] }
//! ```
//!
//! Two kinds of problem, kept apart on purpose:
//! - a [`DataError`] is a *structural* problem — not an object, an unknown key, a
//!   `line_items` that is not an array — and makes the request invalid (400): the
//!   data cannot even be reviewed;
//! - a [`Finding`] is a problem a reviewer can fix — a missing vendor, a bad date, an
//!   amount that does not add up. Errors and warnings are stored with the export and
//!   lower its [`quality_score`]; they never fail the request.
//!
//! Invariants:
//! - money is exact: amounts are parsed from their text (a JSON number's
//!   `Number::to_string()`, or a string) straight into [`Decimal`], never through
//!   `f64`, so `0.10 + 0.20` is `0.30`;
//! - validation is pure and deterministic — no clock, no locale — and findings come
//!   in a fixed order: `vendor_name`, `invoice_number`, `invoice_date`, `currency`,
//!   `total_amount`, `line_items`, then each line in order (`description`,
//!   `quantity`, `unit_price`, `amount`);
//! - `null` is treated exactly like an absent field, and a string of only whitespace
//!   like an empty one (`required`).
//!
//! Field paths in findings are relative to `export_data` (`line_items[1].amount`);
//! paths in a [`DataError`] start at `export_data` (`export_data.line_items[2].colour`).
//! Line indexes are zero-based in both (the CSV's `line_number` is one-based).

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};

/// Every key `export_data` may contain; anything else is a [`DataError::UnknownField`]
/// so a typo (`total`) fails loudly instead of being exported without its value.
const TOP_LEVEL_FIELDS: [&str; 6] = [
    "vendor_name",
    "invoice_number",
    "invoice_date",
    "currency",
    "total_amount",
    "line_items",
];

/// Every key a line item may contain.
const LINE_FIELDS: [&str; 4] = ["description", "quantity", "unit_price", "amount"];

/// Longest `description` (in Unicode scalar values) before it draws a
/// `long_description` warning; accounting systems commonly truncate beyond this.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// Points taken off [`quality_score`] per error.
pub const ERROR_PENALTY: usize = 35;
/// Points taken off [`quality_score`] per warning.
pub const WARNING_PENALTY: usize = 5;

/// Structural problems make the request invalid (400); they are not validation
/// findings. Paths start at `export_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// The value at this path must be a JSON object (`export_data`, a line item).
    NotAnObject(String),
    /// A key that is not part of the export format, e.g.
    /// `export_data.line_items[2].colour`.
    UnknownField(String),
    /// The value at `path` has the wrong JSON type (`line_items` not an array).
    WrongType {
        path: String,
        expected: &'static str,
    },
    /// The data, serialized, is larger than [`MAX_EXPORT_DATA_BYTES`].
    TooLarge { bytes: usize },
}

/// The largest export data (`export_data`, `approved_data`), serialized, that is
/// accepted. A staged export is stored up to six times over in one D1 row (the
/// export: original, prepared and approved data, the diff, the rendered file) and
/// in one audit row (before and after snapshots, three copies each); D1 limits a
/// row to 2 MB, so 256 KiB keeps every row of the workflow storable — an export
/// that could be staged but never approved or posted would be worse than a clear
/// 413 at the start.
pub const MAX_EXPORT_DATA_BYTES: usize = 256 * 1024;

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAnObject(path) => write!(f, "`{path}` must be a JSON object"),
            Self::UnknownField(path) => write!(f, "unknown field `{path}`"),
            Self::WrongType { path, expected } => write!(f, "`{path}` must be {expected}"),
            Self::TooLarge { bytes } => write!(
                f,
                "the export data is {bytes} bytes as JSON; at most {MAX_EXPORT_DATA_BYTES} are accepted \
                 (every stored row of the workflow must fit D1's 2 MB row limit): split the export"
            ),
        }
    }
}

impl std::error::Error for DataError {}

/// One validation finding: which field, a stable machine-readable `code`, and a
/// message for the reviewer.
///
/// Error codes: `required`, `invalid_type`, `invalid_date`, `invalid_currency`,
/// `invalid_number`, `too_many_decimals`, `line_amount_mismatch`, `total_mismatch`.
/// Warning codes: `untrimmed`, `non_positive_total`, `duplicate_line`,
/// `long_description`, `non_positive_quantity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Path relative to `export_data`: `total_amount`, `line_items[1].amount`.
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

/// The outcome of [`validate_export_data`]. `quality_score` is always
/// `quality_score(errors.len(), warnings.len())`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validation {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    pub quality_score: u8,
}

/// `100 − 35·errors − 5·warnings`, clamped to `0..=100`.
///
/// The weights are chosen against the default approval threshold of 70: a single
/// error scores 65, so any error blocks approval, while up to six warnings (70)
/// still pass and a seventh (65) does not. Saturating, so no count overflows.
pub fn quality_score(errors: usize, warnings: usize) -> u8 {
    let penalty = errors
        .saturating_mul(ERROR_PENALTY)
        .saturating_add(warnings.saturating_mul(WARNING_PENALTY));
    // At most 100 after the subtraction, so the cast is lossless.
    100usize.saturating_sub(penalty) as u8
}

/// The active ISO 4217 alphabetic codes (List One, including fund, precious-metal
/// and special codes such as `XDR` and `XXX`), sorted so it can be binary-searched.
///
/// Withdrawn codes are absent: `ANG` (replaced by `XCG`), `BGN` (euro since
/// 2026-01-01), `CUC`, `HRK` (euro), `SLL` (replaced by `SLE`), `ZWL` (replaced by
/// `ZWG`). Update this list when the maintenance agency amends List One.
pub const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD",
    "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DJF",
    "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP",
    "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR",
    "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT",
    "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP",
    "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR",
    "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB",
    "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN",
    "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH",
    "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAD",
    "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD", "XPF",
    "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWG",
];

/// Whether `code` is in [`ISO_4217`]; exact and case-sensitive (`usd` is not).
pub fn is_iso_4217(code: &str) -> bool {
    ISO_4217.binary_search(&code).is_ok()
}

/// The number of minor-unit digits of a currency, as ISO 4217 gives them: 0 for
/// `JPY`, `KRW` and the other zero-decimal currencies; 3 for `BHD`, `IQD`, `JOD`,
/// `KWD`, `LYD`, `OMR`, `TND`; 4 for the units of account `CLF` and `UYW`; 2 for
/// everything else — including codes ISO gives no minor unit (`XAU`, `XDR`, …) and
/// unknown codes, so an invalid currency is still checked to the cent.
pub fn currency_exponent(code: &str) -> u32 {
    match code {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// An exact decimal from a JSON number or a numeric string; `None` for anything
/// else (including blank strings, `true`, objects).
///
/// The text — serde_json's `Number::to_string()`, which round-trips every `f64` and
/// integer it holds, or the string's content — must be a plain decimal: an optional
/// `-`, digits, optionally `.` and digits, optionally an exponent (`e`/`E`, optional
/// sign, digits; parsed with `Decimal::from_scientific`). No leading `+`, no surrounding
/// whitespace, no `_` separators, no `.5` or `5.`. A value `Decimal` cannot hold
/// exactly (more than 28 fractional digits, magnitude beyond ~7.9·10²⁸) is `None`
/// rather than rounded. Callers wanting full precision for large or very precise
/// values must send strings: serde_json itself has already rounded a JSON number
/// with more than ~17 significant digits to the nearest `f64`.
pub fn parse_money(v: &Value) -> Option<Decimal> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    parse_decimal_text(&text)
}

/// See [`parse_money`].
fn parse_decimal_text(text: &str) -> Option<Decimal> {
    let expected = canonical_text(text)?;
    // More than 29 significant digits or 28 decimal places is more than a Decimal
    // holds: refused before parsing.
    if expected.1.len() > 29 || expected.2 > 28 {
        return None;
    }
    let text = without_idle_zeros(text);
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(&text).ok()?
    } else {
        Decimal::from_str(&text).ok()?
    };
    // `Decimal` parsing may round what it cannot hold; insist it did not.
    (canonical_decimal(parsed) == expected).then_some(parsed)
}

/// A plain decimal's text (one [`canonical_text`] accepted) without the zeros
/// that change neither its value nor the scale a [`Decimal`] can keep: leading
/// zeros of the integer part, and trailing zeros of the fraction past 28 places.
///
/// Once [`parse_decimal_text`] has refused more than 29 significant digits and
/// 28 places, these are all that can make the text long — and rust_decimal's
/// parser recurses once per digit, so a million zeros in a 1 MiB body would
/// overflow the stack wherever the compiler does not turn that recursion into
/// a loop (it does in the release Worker, not in a debug build).
fn without_idle_zeros(text: &str) -> String {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (mantissa, exponent) = rest.split_at(rest.find(['e', 'E']).unwrap_or(rest.len()));
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let int = match int.trim_start_matches('0') {
        "" => "0",
        int => int,
    };
    // ASCII digits only, so any byte index is a char boundary.
    let keep = frac.trim_end_matches('0').len().max(frac.len().min(28));
    let frac = &frac[..keep];
    let point = if frac.is_empty() { "" } else { "." };
    format!("{sign}{int}{point}{frac}{exponent}")
}

/// A number's value as (negative, significant digits, scale), with the digits
/// stripped of leading zeros and of trailing zeros after the decimal point, so two
/// spellings of one value compare equal; zero is `(false, "", 0)`.
type Canonical = (bool, String, u32);

/// [`Canonical`] form of a number's text, or `None` if the text is not a plain
/// decimal (see [`parse_money`]) or its exponent is absurd.
fn canonical_text(text: &str) -> Option<Canonical> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            // Beyond this no value fits a Decimal; refusing early bounds the work.
            if digits.is_empty() || digits.len() > 3 || !all_digits(digits) {
                return None;
            }
            let magnitude: i64 = digits.parse().ok()?;
            (
                m,
                if e.starts_with('-') {
                    -magnitude
                } else {
                    magnitude
                },
            )
        }
        None => (rest, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, f),
        Some(_) => return None,
        None => (mantissa, ""),
    };
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let mut digits: String = int.chars().chain(frac.chars()).collect();
    let mut scale = frac.len() as i64 - exponent;
    if scale < 0 {
        digits.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
        scale = 0;
    }
    Some(canonical(negative, digits, scale as u64))
}

/// [`Canonical`] form of a decimal.
fn canonical_decimal(d: Decimal) -> Canonical {
    canonical(
        d.is_sign_negative(),
        d.mantissa().unsigned_abs().to_string(),
        u64::from(d.scale()),
    )
}

fn canonical(negative: bool, digits: String, mut scale: u64) -> Canonical {
    let mut digits = digits.trim_start_matches('0').to_owned();
    while scale > 0 && digits.ends_with('0') {
        digits.pop();
        scale -= 1;
    }
    if digits.is_empty() {
        return (false, digits, 0);
    }
    // More than u32 can hold is certainly more than a Decimal's 28.
    (negative, digits, u32::try_from(scale).unwrap_or(u32::MAX))
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// The number of decimal places `d` needs: its scale once trailing zeros are
/// dropped, so `10.000` needs 0 and a JSON `1000.0` is fine for `JPY`.
fn decimals(d: Decimal) -> u32 {
    d.normalize().scale()
}

/// Whether `s` is an ISO 8601 calendar date `YYYY-MM-DD` that exists in the
/// proleptic Gregorian calendar (years 0001–9999; February has 29 days in years
/// divisible by 4, except centuries not divisible by 400).
pub fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    // Bytes, not `str` slices: no char-boundary panic whatever the input.
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1 && (1..=days).contains(&day)
}

/// Checks the structure of `export_data` and validates its content.
///
/// `Err` only for structure ([`DataError`]), checked before any finding, in this
/// order: `export_data` is an object; its keys are known (the alphabetically first
/// unknown key is reported); `line_items`, unless absent or `null`, is an array;
/// each line item, in order, is an object with known keys. Everything else is a
/// [`Finding`] in the returned [`Validation`]:
///
/// Errors:
/// - `required`: a field absent, `null` or blank; `line_items` empty;
/// - `invalid_type`: `vendor_name`, `invoice_number` or `description` not a string;
/// - `invalid_date`: `invoice_date` not an existing `YYYY-MM-DD` date;
/// - `invalid_currency`: `currency` not in [`ISO_4217`] (case-sensitive; the
///   message suggests the code it resembles);
/// - `invalid_number`: `quantity`, `unit_price`, `amount` or `total_amount` not a
///   number or numeric string ([`parse_money`]);
/// - `too_many_decimals`: `amount` or `total_amount` with more decimal places than
///   the currency's minor unit (trailing zeros do not count; `quantity` and
///   `unit_price` may have more);
/// - `line_amount_mismatch` (on the line's `amount`): `amount` differs from
///   `quantity × unit_price` by more than half a minor unit, i.e. it is not that
///   product rounded either way — a product, or a difference, beyond a
///   [`Decimal`]'s range (±79228162514264337593543950335) included;
/// - `total_mismatch` (on `total_amount`): the lines' `amount`s sum to something
///   more than one minor unit ("a cent") away from `total_amount`, or beyond a
///   `Decimal`'s range (which no total can match); checked only when every line's
///   `amount` parses.
///
/// No input panics: all money arithmetic is checked (`checked_mul`, `checked_add`,
/// `checked_sub`), and a result out of range is one of these findings.
///
/// Warnings:
/// - `untrimmed`: `vendor_name` or `invoice_number` with leading/trailing whitespace;
/// - `non_positive_total`: `total_amount` ≤ 0 (a credit note, perhaps);
/// - `duplicate_line` (on the later line's `description`): a description, trimmed,
///   identical (case-sensitive) to an earlier line's;
/// - `long_description`: more than [`MAX_DESCRIPTION_CHARS`] characters;
/// - `non_positive_quantity`: a line `quantity` ≤ 0.
///
/// Tolerances use [`currency_exponent`] of the given currency, and 2 (cents) when it
/// is missing or invalid.
pub fn validate_export_data(data: &Value) -> Result<Validation, DataError> {
    let bytes = data.to_string().len();
    if bytes > MAX_EXPORT_DATA_BYTES {
        return Err(DataError::TooLarge { bytes });
    }
    let (obj, lines) = check_structure(data)?;

    let currency = obj.get("currency").and_then(Value::as_str);
    let exponent = currency.map_or(2, currency_exponent);

    // Lines first, into their own report, so the total can be compared with their
    // sum; their findings are appended after the top-level fields'.
    let mut line_report = Report::default();
    let items = lines.as_deref().unwrap_or_default();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    // Every line is checked, in order, whether or not its amount parses.
    let amounts: Vec<Option<Decimal>> = items
        .iter()
        .enumerate()
        .map(|(i, line)| check_line(&mut line_report, i, line, exponent, &mut seen))
        .collect();
    // `None` when there is nothing to compare the total with: no lines, or a line
    // amount that did not parse; else their sum, `Some(None)` when it is beyond a
    // Decimal's range.
    let line_sum = match amounts.into_iter().collect::<Option<Vec<_>>>() {
        Some(amounts) if !amounts.is_empty() => Some(exact_sum(&amounts)),
        _ => None,
    };

    let mut r = Report::default();
    for name in ["vendor_name", "invoice_number"] {
        if let Some(s) = text(&mut r, obj, name, name.to_owned()) {
            if s.trim() != s {
                r.warn(
                    name,
                    "untrimmed",
                    format!("{name} has leading or trailing whitespace"),
                );
            }
        }
    }
    check_date(&mut r, obj);
    check_currency(&mut r, currency, obj);
    check_total(&mut r, obj, exponent, line_sum);
    if lines.is_none() {
        r.error("line_items", "required", "line_items is required");
    } else if items.is_empty() {
        r.error(
            "line_items",
            "required",
            "at least one line item is required",
        );
    }
    r.errors.append(&mut line_report.errors);
    r.warnings.append(&mut line_report.warnings);

    Ok(Validation {
        quality_score: quality_score(r.errors.len(), r.warnings.len()),
        errors: r.errors,
        warnings: r.warnings,
    })
}

/// A JSON object.
type Object = Map<String, Value>;

/// The smallest and largest values a [`Decimal`] holds: ±(2⁹⁶ − 1).
const DECIMAL_RANGE: &str = "±79228162514264337593543950335";

/// The sum of `amounts` if it is within a [`Decimal`]'s range, or `None` if it is
/// not (each amount is; their sum may not be).
///
/// Exact whatever the order of the amounts: a running sum that is not negative
/// takes a negative amount next while one is left, and a negative running sum a
/// non-negative one, so it never leaves the range between zero and the final sum
/// or the largest amount — an overflow part way means the sum itself is out of
/// range. (Adding in the given order, `MAX + MAX − MAX` would overflow.)
fn exact_sum(amounts: &[Decimal]) -> Option<Decimal> {
    let (mut negative, mut other): (Vec<Decimal>, Vec<Decimal>) =
        amounts.iter().partition(|a| a.is_sign_negative());
    let mut sum = Decimal::ZERO;
    loop {
        let next = if sum.is_sign_negative() {
            other.pop().or_else(|| negative.pop())
        } else {
            negative.pop().or_else(|| other.pop())
        };
        match next {
            Some(amount) => sum = sum.checked_add(amount)?,
            None => return Some(sum),
        }
    }
}

/// `export_data` as an object, and its line items as objects (`None` when
/// `line_items` is absent or `null`), or the first structural problem.
fn check_structure(data: &Value) -> Result<(&Object, Option<Vec<&Object>>), DataError> {
    let Value::Object(obj) = data else {
        return Err(DataError::NotAnObject("export_data".to_owned()));
    };
    check_keys(obj, &TOP_LEVEL_FIELDS, "export_data")?;
    let lines = match obj.get("line_items") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let path = format!("export_data.line_items[{i}]");
                    let Value::Object(line) = item else {
                        return Err(DataError::NotAnObject(path));
                    };
                    check_keys(line, &LINE_FIELDS, &path)?;
                    Ok(line)
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(DataError::WrongType {
                path: "export_data.line_items".to_owned(),
                expected: "an array",
            })
        }
    };
    Ok((obj, lines))
}

/// The alphabetically first key of `obj` not in `known`, as an error. Sorted here
/// rather than relying on `serde_json::Map`'s order, which a `preserve_order`
/// feature elsewhere in the dependency tree could change.
fn check_keys(obj: &Object, known: &[&str], path: &str) -> Result<(), DataError> {
    match obj.keys().filter(|k| !known.contains(&k.as_str())).min() {
        Some(unknown) => Err(DataError::UnknownField(format!("{path}.{unknown}"))),
        None => Ok(()),
    }
}

/// Findings collected in order.
#[derive(Default)]
struct Report {
    errors: Vec<Finding>,
    warnings: Vec<Finding>,
}

impl Report {
    fn error(&mut self, field: impl Into<String>, code: &'static str, message: impl Into<String>) {
        self.errors.push(Finding {
            field: field.into(),
            code,
            message: message.into(),
        });
    }

    fn warn(&mut self, field: impl Into<String>, code: &'static str, message: impl Into<String>) {
        self.warnings.push(Finding {
            field: field.into(),
            code,
            message: message.into(),
        });
    }
}

/// The field's value, with `null` treated as absent.
fn field<'a>(obj: &'a Object, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

/// A required text field: the string (untrimmed) if present and not blank; else
/// `required` or `invalid_type`, and `None`.
fn text<'a>(r: &mut Report, obj: &'a Object, name: &str, path: String) -> Option<&'a str> {
    match field(obj, name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        None | Some(Value::String(_)) => {
            r.error(path, "required", format!("{name} is required"));
            None
        }
        Some(_) => {
            r.error(path, "invalid_type", format!("{name} must be a string"));
            None
        }
    }
}

/// A required number: the exact value if present and numeric; else `required` or
/// `invalid_number`, and `None`.
fn number(r: &mut Report, obj: &Object, name: &str, path: String) -> Option<Decimal> {
    match field(obj, name) {
        None => {
            r.error(path, "required", format!("{name} is required"));
            None
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            r.error(path, "required", format!("{name} is required"));
            None
        }
        Some(v) => {
            let parsed = parse_money(v);
            if parsed.is_none() {
                r.error(
                    path,
                    "invalid_number",
                    format!("{name} must be a decimal number such as 12.34 (got {v})"),
                );
            }
            parsed
        }
    }
}

/// `too_many_decimals` when `value` needs more places than the currency allows.
fn check_decimals(r: &mut Report, path: &str, name: &str, value: Decimal, exponent: u32) {
    if decimals(value) > exponent {
        r.error(
            path,
            "too_many_decimals",
            format!(
                "{name} {value} has more than {exponent} decimal place{} for this currency",
                if exponent == 1 { "" } else { "s" }
            ),
        );
    }
}

fn check_date(r: &mut Report, obj: &Object) {
    const NAME: &str = "invoice_date";
    let Some(value) = field(obj, NAME) else {
        r.error(NAME, "required", "invoice_date is required");
        return;
    };
    match value {
        Value::String(s) if s.trim().is_empty() => {
            r.error(NAME, "required", "invoice_date is required");
        }
        Value::String(s) if is_iso_date(s) => {}
        other => r.error(
            NAME,
            "invalid_date",
            format!("invoice_date must be an existing date in the form YYYY-MM-DD (got {other})"),
        ),
    }
}

fn check_currency(r: &mut Report, currency: Option<&str>, obj: &Object) {
    const NAME: &str = "currency";
    match (field(obj, NAME), currency) {
        (None, _) => r.error(NAME, "required", "currency is required"),
        (Some(_), Some(code)) if code.trim().is_empty() => {
            r.error(NAME, "required", "currency is required");
        }
        (Some(_), Some(code)) if is_iso_4217(code) => {}
        (Some(_), Some(code)) => {
            let suggestion = code.trim().to_ascii_uppercase();
            let message = if is_iso_4217(&suggestion) {
                format!("currency {code:?} is not an ISO 4217 code; did you mean \"{suggestion}\"?")
            } else {
                format!("currency {code:?} is not an active ISO 4217 code")
            };
            r.error(NAME, "invalid_currency", message);
        }
        (Some(other), None) => r.error(
            NAME,
            "invalid_currency",
            format!("currency must be an ISO 4217 code such as \"EUR\" (got {other})"),
        ),
    }
}

/// `total_amount`'s own findings, then `total_mismatch` against `line_sum` when
/// it is known: `Some(None)` is a sum beyond a [`Decimal`]'s range, which no total
/// can match.
fn check_total(r: &mut Report, obj: &Object, exponent: u32, line_sum: Option<Option<Decimal>>) {
    const NAME: &str = "total_amount";
    let Some(total) = number(r, obj, NAME, NAME.to_owned()) else {
        return;
    };
    check_decimals(r, NAME, NAME, total, exponent);
    let one_minor_unit = Decimal::new(1, exponent);
    match line_sum {
        None => {}
        Some(None) => r.error(
            NAME,
            "total_mismatch",
            format!(
                "line amounts sum beyond the range of an exact amount \
                 ({DECIMAL_RANGE}), so they cannot match total_amount {total}"
            ),
        ),
        // A difference too large for a Decimal is certainly more than a minor unit.
        Some(Some(sum)) if within(sum, total, one_minor_unit) => {}
        Some(Some(sum)) => r.error(
            NAME,
            "total_mismatch",
            format!(
                "line amounts sum to {sum} but total_amount is {total} \
                 (more than {one_minor_unit} apart)"
            ),
        ),
    }
    if total <= Decimal::ZERO {
        r.warn(
            NAME,
            "non_positive_total",
            format!("total_amount {total} is not positive"),
        );
    }
}

/// Whether `a` and `b` are at most `tolerance` apart. A difference beyond a
/// [`Decimal`]'s range is not within any tolerance (and is no panic).
fn within(a: Decimal, b: Decimal, tolerance: Decimal) -> bool {
    a.checked_sub(b)
        .is_some_and(|difference| difference.abs() <= tolerance)
}

/// One line's findings; its `amount` if it parsed. `seen` holds the trimmed
/// descriptions of earlier lines with their indexes, for `duplicate_line`.
fn check_line<'a>(
    r: &mut Report,
    i: usize,
    line: &'a Object,
    exponent: u32,
    seen: &mut Vec<(&'a str, usize)>,
) -> Option<Decimal> {
    let path = |name: &str| format!("line_items[{i}].{name}");

    if let Some(description) = text(r, line, "description", path("description")) {
        let key = description.trim();
        match seen.iter().find(|(d, _)| *d == key) {
            Some((_, first)) => r.warn(
                path("description"),
                "duplicate_line",
                format!("same description as line_items[{first}]: {key:?}"),
            ),
            None => seen.push((key, i)),
        }
        let chars = description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            r.warn(
                path("description"),
                "long_description",
                format!(
                    "description is {chars} characters; more than {MAX_DESCRIPTION_CHARS} \
                     may be truncated by the accounting system"
                ),
            );
        }
    }

    let quantity = number(r, line, "quantity", path("quantity"));
    if let Some(q) = quantity.filter(|q| *q <= Decimal::ZERO) {
        r.warn(
            path("quantity"),
            "non_positive_quantity",
            format!("quantity {q} is not positive"),
        );
    }
    let unit_price = number(r, line, "unit_price", path("unit_price"));
    let amount = number(r, line, "amount", path("amount"));

    if let Some(amount) = amount {
        check_decimals(r, &path("amount"), "amount", amount, exponent);
    }
    if let (Some(q), Some(p), Some(amount)) = (quantity, unit_price, amount) {
        let half_minor_unit = Decimal::new(5, exponent + 1);
        match q.checked_mul(p) {
            Some(expected) if within(amount, expected, half_minor_unit) => {}
            Some(expected) => r.error(
                path("amount"),
                "line_amount_mismatch",
                format!(
                    "amount {amount} does not match quantity × unit_price: \
                     expected {expected} ({q} × {p}), got {amount}"
                ),
            ),
            None => r.error(
                path("amount"),
                "line_amount_mismatch",
                format!("quantity × unit_price ({q} × {p}) is too large to check"),
            ),
        }
    }
    amount
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    fn clean() -> Value {
        json!({
            "vendor_name": "Acme GmbH",
            "invoice_number": "INV-1001",
            "invoice_date": "2026-10-31",
            "currency": "EUR",
            "total_amount": "45.00",
            "line_items": [
                {"description": "Widget", "quantity": 3, "unit_price": "10.00", "amount": "30.00"},
                {"description": "Gadget", "quantity": "1.5", "unit_price": 10, "amount": 15}
            ]
        })
    }

    fn validate(data: &Value) -> Validation {
        validate_export_data(data).unwrap()
    }

    /// `(field, code)` of each finding.
    fn codes(findings: &[Finding]) -> Vec<(&str, &str)> {
        findings
            .iter()
            .map(|f| (f.field.as_str(), f.code))
            .collect()
    }

    fn errors(data: &Value) -> Vec<(String, &'static str)> {
        validate(data)
            .errors
            .into_iter()
            .map(|f| (f.field, f.code))
            .collect()
    }

    fn warnings(data: &Value) -> Vec<(String, &'static str)> {
        validate(data)
            .warnings
            .into_iter()
            .map(|f| (f.field, f.code))
            .collect()
    }

    fn one(field: &str, code: &'static str) -> Vec<(String, &'static str)> {
        vec![(field.to_owned(), code)]
    }

    fn with(mut data: Value, pointer: &str, value: Value) -> Value {
        *data.pointer_mut(pointer).unwrap() = value;
        data
    }

    fn without(mut data: Value, field: &str) -> Value {
        data.as_object_mut().unwrap().remove(field);
        data
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn a_clean_invoice_scores_100_with_no_findings() {
        let v = validate(&clean());
        assert_eq!(
            v,
            Validation {
                errors: vec![],
                warnings: vec![],
                quality_score: 100
            }
        );
    }

    #[test]
    fn missing_null_and_blank_required_fields_are_required_errors() {
        for field in [
            "vendor_name",
            "invoice_number",
            "invoice_date",
            "currency",
            "total_amount",
        ] {
            assert_eq!(errors(&without(clean(), field)), one(field, "required"));
            let pointer = format!("/{field}");
            assert_eq!(
                errors(&with(clean(), &pointer, Value::Null)),
                one(field, "required")
            );
            assert_eq!(
                errors(&with(clean(), &pointer, json!("  \t"))),
                one(field, "required")
            );
        }
        let data = without(clean(), "line_items");
        let v = validate(&data);
        // Without lines there is nothing to compare the total with.
        assert_eq!(codes(&v.errors), [("line_items", "required")]);
        assert_eq!(
            errors(&with(clean(), "/line_items", Value::Null)),
            one("line_items", "required")
        );
    }

    #[test]
    fn missing_line_fields_are_required_errors_with_line_paths() {
        for field in ["description", "quantity", "unit_price", "amount"] {
            let mut data = clean();
            data["line_items"][1].as_object_mut().unwrap().remove(field);
            // Without the amount the sum is unknown, so no total_mismatch on top.
            let expected = one(&format!("line_items[1].{field}"), "required");
            assert_eq!(errors(&data), expected);
            data["line_items"][1][field] = json!(" ");
            assert_eq!(errors(&data), expected);
        }
    }

    #[test]
    fn empty_line_items_is_a_required_error() {
        let data = with(clean(), "/line_items", json!([]));
        let v = validate(&data);
        assert_eq!(
            v.errors,
            [Finding {
                field: "line_items".into(),
                code: "required",
                message: "at least one line item is required".into()
            }]
        );
    }

    #[test]
    fn non_string_text_fields_are_invalid_type_errors() {
        let data = with(clean(), "/vendor_name", json!(42));
        assert_eq!(errors(&data), one("vendor_name", "invalid_type"));
        let data = with(clean(), "/line_items/0/description", json!(["a"]));
        assert_eq!(
            errors(&data),
            one("line_items[0].description", "invalid_type")
        );
    }

    #[test]
    fn leap_day_2024_is_valid_and_2023_is_invalid() {
        assert!(
            validate(&with(clean(), "/invoice_date", json!("2024-02-29")))
                .errors
                .is_empty()
        );
        assert_eq!(
            errors(&with(clean(), "/invoice_date", json!("2023-02-29"))),
            one("invoice_date", "invalid_date")
        );
    }

    #[test]
    fn dates_must_exist_and_be_in_yyyy_mm_dd_form() {
        for ok in [
            "2000-02-29",
            "2026-01-31",
            "2026-04-30",
            "0001-01-01",
            "9999-12-31",
        ] {
            assert!(is_iso_date(ok), "{ok}");
        }
        for bad in [
            "1900-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "0000-01-01",
            "2026-1-05",
            "26-01-05",
            "2026/01/05",
            "2026-01-05T00:00:00Z",
            " 2026-01-05",
            "2026-+1-05",
            "２０２６-01-05",
            "",
        ] {
            assert!(!is_iso_date(bad), "{bad}");
        }
        let data = with(clean(), "/invoice_date", json!(20260105));
        let v = validate(&data);
        assert_eq!(codes(&v.errors), [("invoice_date", "invalid_date")]);
        assert!(v.errors[0].message.contains("20260105"));
    }

    #[test]
    fn currency_is_case_sensitive_and_suggests_the_uppercase_code() {
        let v = validate(&with(clean(), "/currency", json!("usd")));
        assert_eq!(codes(&v.errors), [("currency", "invalid_currency")]);
        assert!(
            v.errors[0].message.contains("\"USD\""),
            "{}",
            v.errors[0].message
        );

        let v = validate(&with(clean(), "/currency", json!("ZZZ")));
        assert_eq!(codes(&v.errors), [("currency", "invalid_currency")]);
        assert!(!v.errors[0].message.contains("did you mean"));

        for withdrawn in ["ANG", "HRK", "ZWL", "SLL", "CUC", "BGN"] {
            assert_eq!(
                errors(&with(clean(), "/currency", json!(withdrawn))),
                one("currency", "invalid_currency"),
                "{withdrawn}"
            );
        }
        assert_eq!(
            errors(&with(clean(), "/currency", json!(978))),
            one("currency", "invalid_currency")
        );
    }

    #[test]
    fn the_currency_list_is_sorted_unique_three_uppercase_letters() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO_4217
            .iter()
            .all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
        assert_eq!(ISO_4217.len(), 178);
        for code in [
            "USD", "EUR", "JPY", "GBP", "CHF", "XCG", "ZWG", "SLE", "VED",
        ] {
            assert!(is_iso_4217(code), "{code}");
        }
    }

    #[test]
    fn currency_exponents_follow_iso_4217_minor_units() {
        for (code, exponent) in [
            ("JPY", 0),
            ("KRW", 0),
            ("ISK", 0),
            ("XOF", 0),
            ("BHD", 3),
            ("KWD", 3),
            ("OMR", 3),
            ("JOD", 3),
            ("TND", 3),
            ("IQD", 3),
            ("LYD", 3),
            ("CLF", 4),
            ("USD", 2),
            ("EUR", 2),
            ("XAU", 2),
            ("nope", 2),
        ] {
            assert_eq!(currency_exponent(code), exponent, "{code}");
        }
    }

    #[test]
    fn non_numeric_money_fields_are_invalid_number_errors() {
        for bad in [
            json!("ten"),
            json!("1,000.00"),
            json!("$10"),
            json!(" 10.00"),
            json!("+10"),
            json!(".5"),
            json!("5."),
            json!("1_000"),
            json!("0x10"),
            json!("NaN"),
            json!(true),
            json!({"value": 10}),
        ] {
            let data = with(clean(), "/line_items/0/unit_price", bad.clone());
            assert_eq!(
                errors(&data),
                one("line_items[0].unit_price", "invalid_number"),
                "{bad}"
            );
        }
        let data = with(clean(), "/total_amount", json!("forty-five"));
        assert_eq!(errors(&data), one("total_amount", "invalid_number"));
        let data = with(clean(), "/line_items/1/amount", json!([15]));
        // The sum is unknown, so no total_mismatch on top.
        assert_eq!(errors(&data), one("line_items[1].amount", "invalid_number"));
    }

    #[test]
    fn a_line_amount_off_by_more_than_half_a_minor_unit_is_a_mismatch() {
        let data = json!({
            "vendor_name": "Acme", "invoice_number": "1", "invoice_date": "2026-01-05",
            "currency": "USD", "total_amount": "10.00",
            "line_items": [{"description": "x", "quantity": 3, "unit_price": "3.34", "amount": "10.00"}]
        });
        let v = validate(&data);
        assert_eq!(
            codes(&v.errors),
            [("line_items[0].amount", "line_amount_mismatch")]
        );
        let message = &v.errors[0].message;
        assert!(message.contains("expected 10.02"), "{message}");
        assert!(message.contains("got 10.00"), "{message}");
        assert_eq!(v.quality_score, 65);
    }

    #[test]
    fn a_line_amount_rounded_either_way_is_not_a_mismatch() {
        // 3 × 3.335 = 10.005: both 10.00 and 10.01 are within half a cent.
        for amount in ["10.00", "10.01"] {
            let data = json!({
                "vendor_name": "Acme", "invoice_number": "1", "invoice_date": "2026-01-05",
                "currency": "USD", "total_amount": amount,
                "line_items": [{"description": "x", "quantity": 3, "unit_price": "3.335", "amount": amount}]
            });
            assert_eq!(errors(&data), [], "{amount}");
        }
    }

    /// The largest value a `Decimal` holds: 2⁹⁶ − 1.
    const EDGE: &str = "79228162514264337593543950335";

    /// One line at the edge of the range: quantity 1 × unit_price `price` with the
    /// given `amount`, and `total` as the total.
    fn edge_invoice(price: &str, amount: &str, total: &str) -> Value {
        json!({
            "vendor_name": "Acme", "invoice_number": "1", "invoice_date": "2026-01-05",
            "currency": "EUR", "total_amount": total,
            "line_items": [{"description": "x", "quantity": "1", "unit_price": price, "amount": amount}]
        })
    }

    #[test]
    fn an_amount_whose_difference_from_the_product_overflows_is_a_mismatch_not_a_panic() {
        // amount − quantity × unit_price is −2 × (2⁹⁶ − 1), beyond a Decimal: the
        // check must say mismatch, not overflow ("Subtraction overflowed").
        let minus_edge = format!("-{EDGE}");
        let v = validate(&edge_invoice(EDGE, &minus_edge, &minus_edge));
        assert_eq!(
            codes(&v.errors),
            [("line_items[0].amount", "line_amount_mismatch")]
        );
        let message = &v.errors[0].message;
        assert!(message.contains(&format!("expected {EDGE}")), "{message}");
        assert!(message.contains(&format!("got {minus_edge}")), "{message}");
        assert_eq!(codes(&v.warnings), [("total_amount", "non_positive_total")]);
        assert!(v.quality_score < 70);
        // And the mirror image.
        let v = validate(&edge_invoice(&minus_edge, EDGE, EDGE));
        assert_eq!(
            codes(&v.errors),
            [("line_items[0].amount", "line_amount_mismatch")]
        );
    }

    #[test]
    fn a_total_whose_difference_from_the_line_sum_overflows_is_a_mismatch_not_a_panic() {
        let minus_edge = format!("-{EDGE}");
        // The lines sum to 2⁹⁶ − 1, the total is its negative: 2 × (2⁹⁶ − 1) apart.
        let v = validate(&edge_invoice(EDGE, EDGE, &minus_edge));
        assert_eq!(codes(&v.errors), [("total_amount", "total_mismatch")]);
        let message = &v.errors[0].message;
        assert!(message.contains(&format!("sum to {EDGE}")), "{message}");
        assert!(
            message.contains(&format!("total_amount is {minus_edge}")),
            "{message}"
        );
        let v = validate(&edge_invoice(&minus_edge, &minus_edge, EDGE));
        assert_eq!(codes(&v.errors), [("total_amount", "total_mismatch")]);
        // The brief's own body: the line mismatches, the total does not overflow.
        let v = validate(&edge_invoice(EDGE, &minus_edge, EDGE));
        assert_eq!(
            codes(&v.errors),
            [
                ("total_amount", "total_mismatch"),
                ("line_items[0].amount", "line_amount_mismatch")
            ]
        );
    }

    #[test]
    fn line_amounts_summing_beyond_the_decimal_range_are_a_total_mismatch() {
        // Each amount fits, their sum does not: no total can match it. This used to
        // skip the total check silently and score 100.
        let line = |description: &str| json!({"description": description, "quantity": 1, "unit_price": EDGE, "amount": EDGE});
        let data = json!({
            "vendor_name": "Acme", "invoice_number": "1", "invoice_date": "2026-01-05",
            "currency": "EUR", "total_amount": EDGE,
            "line_items": [line("a"), line("b")]
        });
        let v = validate(&data);
        assert_eq!(codes(&v.errors), [("total_amount", "total_mismatch")]);
        let message = &v.errors[0].message;
        assert!(message.contains("beyond"), "{message}");
        assert!(message.contains(EDGE), "{message}");
        assert!(v.quality_score < 70);
    }

    #[test]
    fn a_line_sum_that_overflows_only_part_way_is_still_checked_exactly() {
        // EDGE + EDGE − EDGE is EDGE: added in order the running sum would
        // overflow, but the sum itself fits, and it matches the total.
        let minus_edge = format!("-{EDGE}");
        let line = |description: &str, amount: &str| json!({"description": description, "quantity": 1, "unit_price": amount, "amount": amount});
        let data = json!({
            "vendor_name": "Acme", "invoice_number": "1", "invoice_date": "2026-01-05",
            "currency": "EUR", "total_amount": EDGE,
            "line_items": [line("a", EDGE), line("b", EDGE), line("c", &minus_edge)]
        });
        assert_eq!(errors(&data), []);
        let data = with(data, "/total_amount", json!("1.00"));
        assert_eq!(errors(&data), one("total_amount", "total_mismatch"));
    }

    #[test]
    fn lines_summing_more_than_a_cent_from_the_total_are_a_total_mismatch() {
        let v = validate(&with(clean(), "/total_amount", json!("45.02")));
        assert_eq!(codes(&v.errors), [("total_amount", "total_mismatch")]);
        assert!(v.errors[0].message.contains("sum to 45"));
        // Within a cent is fine.
        assert_eq!(errors(&with(clean(), "/total_amount", json!("45.01"))), []);
        assert_eq!(errors(&with(clean(), "/total_amount", json!(44.99))), []);
    }

    #[test]
    fn amounts_with_more_decimals_than_the_currency_allows_are_errors() {
        let data = with(clean(), "/total_amount", json!("45.001"));
        assert_eq!(errors(&data), one("total_amount", "too_many_decimals"));
        let data = with(clean(), "/line_items/0/amount", json!("30.004"));
        assert_eq!(
            errors(&data),
            one("line_items[0].amount", "too_many_decimals")
        );
        // Trailing zeros do not count; unit_price and quantity may be finer.
        let data = with(clean(), "/total_amount", json!("45.000"));
        assert_eq!(errors(&data), []);
        let data = json!({
            "vendor_name": "Acme", "invoice_number": "1", "invoice_date": "2026-01-05",
            "currency": "EUR", "total_amount": "1.23",
            "line_items": [{"description": "x", "quantity": "0.5", "unit_price": "2.4567", "amount": "1.23"}]
        });
        assert_eq!(errors(&data), []);
    }

    #[test]
    fn jpy_amounts_with_decimals_are_too_many_decimals() {
        let data = json!({
            "vendor_name": "Acme KK", "invoice_number": "1", "invoice_date": "2026-01-05",
            "currency": "JPY", "total_amount": "1000.50",
            "line_items": [{"description": "x", "quantity": 1, "unit_price": "1000.50", "amount": "1000.50"}]
        });
        assert_eq!(
            errors(&data),
            [
                ("total_amount".to_owned(), "too_many_decimals"),
                ("line_items[0].amount".to_owned(), "too_many_decimals")
            ]
        );
        // Whole yen are fine, even as a JSON float; tolerances are a whole yen too.
        let data = json!({
            "vendor_name": "Acme KK", "invoice_number": "1", "invoice_date": "2026-01-05",
            "currency": "JPY", "total_amount": 1001.0,
            "line_items": [{"description": "x", "quantity": 3, "unit_price": "333.5", "amount": 1000}]
        });
        assert_eq!(errors(&data), []);
    }

    #[test]
    fn three_dimes_sum_to_thirty_cents_exactly() {
        for (dime, total) in [(json!(0.1), json!(0.3)), (json!("0.10"), json!("0.30"))] {
            let line =
                json!({"description": "d", "quantity": 1, "unit_price": dime, "amount": dime});
            let mut lines = vec![line.clone(), line.clone(), line];
            for (i, l) in lines.iter_mut().enumerate() {
                l["description"] = json!(format!("dime {i}"));
            }
            let data = json!({
                "vendor_name": "Acme", "invoice_number": "1", "invoice_date": "2026-01-05",
                "currency": "USD", "total_amount": total, "line_items": lines
            });
            assert_eq!(validate(&data).quality_score, 100, "{data}");
        }
        // Where f64 has 0.1 + 0.2 != 0.3, the decimals add exactly.
        assert_eq!(
            parse_money(&json!(0.1)).unwrap() + parse_money(&json!(0.2)).unwrap(),
            parse_money(&json!(0.3)).unwrap()
        );
    }

    #[test]
    fn parse_money_is_exact_for_numbers_strings_and_scientific_notation() {
        for (value, expected) in [
            (json!(19.99), "19.99"),
            (json!("0.10"), "0.10"),
            (json!(3), "3"),
            (json!(-7), "-7"),
            (json!("-0.00"), "0"),
            (json!(1e21), "1000000000000000000000"),
            (json!(1.5e-7), "0.00000015"),
            (json!("1.5E3"), "1500"),
            (json!("2e+2"), "200"),
            (json!("007.50"), "7.5"),
            (
                json!("12345678901234567890.12345678"),
                "12345678901234567890.12345678",
            ),
        ] {
            assert_eq!(parse_money(&value), Some(dec(expected)), "{value}");
        }
        // The scale is kept as written, for display.
        assert_eq!(parse_money(&json!("0.10")).unwrap().to_string(), "0.10");
    }

    #[test]
    fn parse_money_refuses_values_it_cannot_hold_exactly() {
        for value in [
            json!("0.00000000000000000000000000001"), // 29 decimal places
            json!("1e-29"),
            json!("99999999999999999999999999999999"),
            json!("1e40"),
            json!("1e99999"),
            json!(""),
            json!(null),
        ] {
            assert_eq!(parse_money(&value), None, "{value}");
        }
    }

    #[test]
    fn parse_money_answers_for_very_long_digit_strings() {
        let zeros = "0".repeat(100_000);
        for (text, expected) in [
            (format!("{zeros}1"), Some(dec("1"))),
            (format!("1{zeros}"), None),
            (format!("0.{zeros}1"), None),
            (format!("1.{zeros}"), Some(dec("1"))),
            (format!("-{zeros}.{zeros}"), Some(Decimal::ZERO)),
            (format!("{zeros}e-999"), None),
            (format!("1{zeros}e-999"), None),
            ("9".repeat(100_000), None),
        ] {
            assert_eq!(parse_money(&json!(text)), expected, "{}…", &text[..12]);
        }
        // The scale kept is what it was before the idle zeros were dropped: as
        // written, up to what a Decimal holds.
        for (text, shown) in [
            (format!("1.{zeros}"), format!("1.{}", "0".repeat(28))),
            (
                format!("12345.{zeros}"),
                format!("12345.{}", "0".repeat(24)),
            ),
            (format!("{zeros}12.50"), "12.50".to_owned()),
            (format!("-{zeros}7.5e1"), "-75".to_owned()),
        ] {
            assert_eq!(
                parse_money(&json!(text)).map(|d| d.to_string()),
                Some(shown)
            );
        }
    }

    #[test]
    fn untrimmed_vendor_and_invoice_number_are_warnings() {
        let data = with(clean(), "/vendor_name", json!(" Acme GmbH"));
        let data = with(data, "/invoice_number", json!("INV-1001\n"));
        let v = validate(&data);
        assert_eq!(v.errors, []);
        assert_eq!(
            codes(&v.warnings),
            [
                ("vendor_name", "untrimmed"),
                ("invoice_number", "untrimmed")
            ]
        );
        assert_eq!(v.quality_score, 90);
    }

    #[test]
    fn a_zero_or_negative_total_is_a_warning() {
        let data = json!({
            "vendor_name": "Acme", "invoice_number": "CN-1", "invoice_date": "2026-01-05",
            "currency": "EUR", "total_amount": "-20.00",
            "line_items": [{"description": "Refund", "quantity": -2, "unit_price": "10.00", "amount": "-20.00"}]
        });
        let v = validate(&data);
        assert_eq!(v.errors, []);
        assert_eq!(
            codes(&v.warnings),
            [
                ("total_amount", "non_positive_total"),
                ("line_items[0].quantity", "non_positive_quantity")
            ]
        );
        let data = with(clean(), "/line_items/0/quantity", json!(0));
        let data = with(data, "/line_items/0/amount", json!("0.00"));
        let data = with(data, "/line_items/1/amount", json!(0));
        let data = with(data, "/line_items/1/quantity", json!("0"));
        let data = with(data, "/total_amount", json!(0));
        assert_eq!(
            warnings(&data),
            [
                ("total_amount".to_owned(), "non_positive_total"),
                ("line_items[0].quantity".to_owned(), "non_positive_quantity"),
                ("line_items[1].quantity".to_owned(), "non_positive_quantity")
            ]
        );
    }

    #[test]
    fn a_repeated_line_description_is_a_warning_on_the_later_line() {
        let data = with(clean(), "/line_items/1/description", json!(" Widget "));
        let v = validate(&data);
        assert_eq!(v.errors, []);
        assert_eq!(
            codes(&v.warnings),
            [("line_items[1].description", "duplicate_line")]
        );
        assert!(v.warnings[0].message.contains("line_items[0]"));
        // Case matters.
        let data = with(clean(), "/line_items/1/description", json!("widget"));
        assert_eq!(warnings(&data), []);
    }

    #[test]
    fn a_description_over_500_characters_is_a_warning() {
        let at_limit = "é".repeat(MAX_DESCRIPTION_CHARS);
        assert_eq!(
            warnings(&with(clean(), "/line_items/0/description", json!(at_limit))),
            []
        );
        let over = "é".repeat(MAX_DESCRIPTION_CHARS + 1);
        assert_eq!(
            warnings(&with(clean(), "/line_items/0/description", json!(over))),
            one("line_items[0].description", "long_description")
        );
    }

    #[test]
    fn findings_come_in_field_order_then_line_order() {
        let data = json!({
            "vendor_name": " Acme",
            "invoice_number": "",
            "invoice_date": "2026-02-30",
            "currency": "eur",
            "total_amount": "99.00",
            "line_items": [
                {"description": "a", "quantity": 2, "unit_price": "5.00", "amount": "11.00"},
                {"description": "a", "quantity": "x", "unit_price": "1.00", "amount": "1.00"},
                {"quantity": -1, "unit_price": "1.00", "amount": "-1.00"}
            ]
        });
        let v = validate(&data);
        assert_eq!(
            codes(&v.errors),
            [
                ("invoice_number", "required"),
                ("invoice_date", "invalid_date"),
                ("currency", "invalid_currency"),
                ("total_amount", "total_mismatch"),
                ("line_items[0].amount", "line_amount_mismatch"),
                ("line_items[1].quantity", "invalid_number"),
                ("line_items[2].description", "required"),
            ]
        );
        assert_eq!(
            codes(&v.warnings),
            [
                ("vendor_name", "untrimmed"),
                ("line_items[1].description", "duplicate_line"),
                ("line_items[2].quantity", "non_positive_quantity"),
            ]
        );
        assert_eq!(v.quality_score, 0);
        // Deterministic: the same input gives the same findings.
        assert_eq!(validate(&data), v);
    }

    #[test]
    fn export_data_over_the_row_budget_is_refused_before_anything_else() {
        let mut data = clean();
        let base = data.to_string().len();
        // "Widget" is replaced: one byte over the budget.
        let pad = MAX_EXPORT_DATA_BYTES - base + "Widget".len() + 1;
        data["line_items"][0]["description"] = json!("d".repeat(pad));
        let n = data.to_string().len();
        assert_eq!(n, MAX_EXPORT_DATA_BYTES + 1);
        assert_eq!(
            validate_export_data(&data),
            Err(DataError::TooLarge { bytes: n })
        );
        assert!(DataError::TooLarge { bytes: n }
            .to_string()
            .contains("262144"));
        let mut fits = clean();
        let pad = MAX_EXPORT_DATA_BYTES - fits.to_string().len() + "Widget".len();
        fits["line_items"][0]["description"] = json!("d".repeat(pad));
        assert_eq!(fits.to_string().len(), MAX_EXPORT_DATA_BYTES);
        assert!(validate_export_data(&fits).is_ok());
    }

    #[test]
    fn unknown_fields_are_data_errors_with_their_paths() {
        // Two unknown keys: the alphabetically first is reported.
        let mut data = clean();
        data["total"] = json!("1");
        data["notes"] = json!("x");
        assert_eq!(
            validate_export_data(&data),
            Err(DataError::UnknownField("export_data.notes".into()))
        );
        let mut data = clean();
        data["line_items"][1]["colour"] = json!("red");
        let err = validate_export_data(&data).unwrap_err();
        assert_eq!(
            err,
            DataError::UnknownField("export_data.line_items[1].colour".into())
        );
        assert_eq!(
            err.to_string(),
            "unknown field `export_data.line_items[1].colour`"
        );
    }

    #[test]
    fn non_objects_and_non_array_line_items_are_data_errors() {
        for data in [json!([]), json!("x"), json!(null), json!(1)] {
            assert_eq!(
                validate_export_data(&data),
                Err(DataError::NotAnObject("export_data".into()))
            );
        }
        let data = with(clean(), "/line_items", json!({"description": "x"}));
        let err = validate_export_data(&data).unwrap_err();
        assert_eq!(
            err,
            DataError::WrongType {
                path: "export_data.line_items".into(),
                expected: "an array"
            }
        );
        assert_eq!(err.to_string(), "`export_data.line_items` must be an array");
        let data = with(clean(), "/line_items/1", json!("Widget"));
        let err = validate_export_data(&data).unwrap_err();
        assert_eq!(
            err,
            DataError::NotAnObject("export_data.line_items[1]".into())
        );
        assert_eq!(
            err.to_string(),
            "`export_data.line_items[1]` must be a JSON object"
        );
    }

    #[test]
    fn quality_score_takes_35_per_error_and_5_per_warning_clamped() {
        assert_eq!(quality_score(0, 0), 100);
        assert_eq!(quality_score(0, 1), 95);
        assert_eq!(quality_score(1, 0), 65);
        assert_eq!(quality_score(0, 6), 70);
        assert_eq!(quality_score(0, 7), 65);
        assert_eq!(quality_score(2, 1), 25);
        assert_eq!(quality_score(3, 0), 0);
        assert_eq!(quality_score(0, 21), 0);
        assert_eq!(quality_score(usize::MAX, usize::MAX), 0);
    }

    #[test]
    fn any_error_scores_below_the_default_threshold() {
        assert!(quality_score(1, 0) < 70);
        assert!(quality_score(0, 6) >= 70);
    }

    #[test]
    fn findings_serialize_as_field_code_message() {
        let f = Finding {
            field: "total_amount".into(),
            code: "total_mismatch",
            message: "m".into(),
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"field": "total_amount", "code": "total_mismatch", "message": "m"})
        );
    }
}

/// Input generators for the staging modules' property tests: JSON-ish values with
/// huge and odd numbers (as strings and as JSON numbers), unicode, empty and long
/// strings, nesting, and invoice-shaped `export_data` whose amounts sit at and
/// beyond the edges of a [`Decimal`].
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;
    use proptest::sample::select;
    use serde_json::{Map, Number, Value};

    /// Numeric-looking text at and past every edge the parsers care about.
    pub const ODD_NUMBERS: &[&str] = &[
        "79228162514264337593543950335",
        "-79228162514264337593543950335",
        "79228162514264337593543950336",
        "-79228162514264337593543950336",
        "39614081257132168796771975168",
        "7.9228162514264337593543950335",
        "0.0000000000000000000000000001",
        "0.00000000000000000000000000001",
        "1e28",
        "1e29",
        "-1e28",
        "1e-28",
        "1e-29",
        "9e999",
        "9e-999",
        "1E+999",
        "1e0000",
        "99999999999999999999999999999999999999999",
        "18446744073709551616",
        "-9223372036854775809",
        "1.7976931348623157e308",
        "5e-324",
        "0",
        "-0",
        "-0.00",
        "0e0",
        "0.5",
        "1.",
        ".5",
        "+1",
        "1e",
        "e1",
        "--1",
        "-",
        "NaN",
        "inf",
        "Infinity",
        "0x10",
        "1_000",
        " 1",
        "1 ",
        "1,5",
        "١٢٣",
        "１２３",
    ];

    /// The keys of every staging body and of `export_data`, so generated objects
    /// get past the unknown-key checks often enough to reach the deeper code.
    pub const KEYS: &[&str] = &[
        "vendor_name",
        "invoice_number",
        "invoice_date",
        "currency",
        "total_amount",
        "line_items",
        "description",
        "quantity",
        "unit_price",
        "amount",
        "invoice_id",
        "export_format",
        "destination_system",
        "export_data",
        "max_retries",
        "approved_data",
        "change_reason",
        "approval_comments",
        "reason",
        "comments",
        "exports",
        "prepared_by",
    ];

    /// Text that looks like a number, or nearly.
    pub fn number_text() -> BoxedStrategy<String> {
        prop_oneof![
            select(ODD_NUMBERS).prop_map(str::to_owned),
            "-?[0-9]{1,40}(\\.[0-9]{1,40})?([eE][-+]?[0-9]{1,4})?",
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| f.to_string()),
            // Long runs of zeros that change neither value nor scale.
            (0usize..2000, 0usize..2000).prop_map(|(lead, trail)| format!(
                "{}1.5{}",
                "0".repeat(lead),
                "0".repeat(trail)
            )),
        ]
        .boxed()
    }

    /// Amounts at the edges of a Decimal's range (±(2⁹⁶ − 1), ±2⁹⁵) and small
    /// ones, drawn often enough that a line's `quantity × unit_price − amount` or
    /// the lines' sum minus the total overflows in many generated invoices.
    pub fn edge_money() -> BoxedStrategy<Value> {
        select(
            &[
                "1",
                "-1",
                "0",
                "0.01",
                "79228162514264337593543950335",
                "-79228162514264337593543950335",
                "39614081257132168796771975168",
                "-39614081257132168796771975168",
            ][..],
        )
        .prop_map(Value::from)
        .boxed()
    }

    /// A money field's value: numeric text, or a JSON number (integers of every
    /// size, floats, and numbers serde_json parses from odd text).
    pub fn money() -> BoxedStrategy<Value> {
        prop_oneof![
            3 => edge_money(),
            1 => number_text().prop_map(Value::String),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => any::<f64>().prop_filter_map("not finite", |f| Number::from_f64(f).map(Value::Number)),
            1 => number_text().prop_filter_map("not a JSON number", |t| {
                serde_json::from_str::<Value>(&t)
                    .ok()
                    .filter(Value::is_number)
            }),
        ]
        .boxed()
    }

    /// Strings: any unicode, control characters, formula triggers, and long ones.
    pub fn text() -> BoxedStrategy<String> {
        prop_oneof![
            "\\PC{0,24}",
            "[\\x00-\\x20=+@\\-\"',;\r\n\t]{0,8}",
            select(
                &[
                    "",
                    " ",
                    "\u{0}",
                    "\u{feff}",
                    "é",
                    "東京",
                    "\u{10ffff}",
                    "=HYPERLINK(\"http://x\",\"x\")",
                    "@SUM(1+1)",
                    "-cmd|' /C calc'!A0",
                    "EUR",
                    "JPY",
                    "2026-02-29",
                    "2024-02-29",
                    "9999-12-31",
                    "0000-01-01",
                    "２０２６-０１-０１",
                    "csv",
                    "json",
                ][..]
            )
            .prop_map(str::to_owned),
            (0usize..3000, select(&["x", "é", "東", "😀", " "][..])).prop_map(|(n, s)| s.repeat(n)),
        ]
        .boxed()
    }

    /// A JSON scalar of any kind.
    pub fn scalar() -> BoxedStrategy<Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            money(),
            text().prop_map(Value::String),
        ]
        .boxed()
    }

    /// An object key: a known one most of the time, any text otherwise.
    pub fn key() -> BoxedStrategy<String> {
        prop_oneof![
            3 => select(KEYS).prop_map(str::to_owned),
            1 => text(),
        ]
        .boxed()
    }

    /// Any JSON value, nested a few levels.
    pub fn json() -> BoxedStrategy<Value> {
        scalar()
            .prop_recursive(5, 64, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec((key(), inner), 0..6)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
            .boxed()
    }

    /// Mostly the right kind of value for the field, sometimes anything.
    fn field_value(money_field: bool) -> BoxedStrategy<Value> {
        let right = if money_field {
            money()
        } else {
            text().prop_map(Value::String).boxed()
        };
        prop_oneof![4 => right, 1 => scalar()].boxed()
    }

    /// An object with most of `fields` (name, is money), each filled by
    /// [`field_value`], and sometimes the `extra` key.
    fn object_of(
        fields: &'static [(&'static str, bool)],
        extra: impl Strategy<Value = Option<(String, Value)>> + 'static,
    ) -> BoxedStrategy<Value> {
        let values: Vec<_> = fields
            .iter()
            .map(|(_, is_money)| prop::option::weighted(0.9, field_value(*is_money)))
            .collect();
        (values, extra)
            .prop_map(move |(values, extra)| {
                let mut obj: Map<String, Value> = fields
                    .iter()
                    .zip(values)
                    .filter_map(|((name, _), v)| Some(((*name).to_owned(), v?)))
                    .collect();
                if let Some((k, v)) = extra {
                    obj.insert(k, v);
                }
                Value::Object(obj)
            })
            .boxed()
    }

    /// A line item: the four line fields, mostly well typed, now and then an
    /// unknown key.
    pub fn line_item() -> BoxedStrategy<Value> {
        const FIELDS: &[(&str, bool)] = &[
            ("description", false),
            ("quantity", true),
            ("unit_price", true),
            ("amount", true),
        ];
        object_of(FIELDS, prop::option::weighted(0.05, (key(), scalar())))
    }

    /// `export_data` shaped like an invoice, its values odd: what gets past the
    /// structure checks into validation, rendering and diffing.
    pub fn invoice() -> BoxedStrategy<Value> {
        const FIELDS: &[(&str, bool)] = &[
            ("vendor_name", false),
            ("invoice_number", false),
            ("invoice_date", false),
            ("currency", false),
            ("total_amount", true),
        ];
        let lines = prop_oneof![
            8 => prop::collection::vec(line_item(), 0..8).prop_map(Value::Array),
            1 => scalar(),
        ];
        (
            object_of(FIELDS, prop::option::weighted(0.05, (key(), scalar()))),
            prop::option::weighted(0.9, lines),
        )
            .prop_map(|(mut data, lines)| {
                if let (Value::Object(obj), Some(lines)) = (&mut data, lines) {
                    obj.insert("line_items".to_owned(), lines);
                }
                data
            })
            .boxed()
    }

    /// Export data of any kind: mostly invoice-shaped, sometimes any JSON.
    pub fn export_data() -> BoxedStrategy<Value> {
        prop_oneof![4 => invoice(), 1 => json()].boxed()
    }

    /// JSON text nested `depth` levels deep, as arrays or objects, around `leaf`.
    pub fn nested_text(depth: usize, objects: bool, leaf: &str) -> String {
        let (open, close) = if objects {
            ("{\"line_items\":", "}")
        } else {
            ("[", "]")
        };
        format!("{}{leaf}{}", open.repeat(depth), close.repeat(depth))
    }

    /// Deeply nested JSON text (past serde_json's recursion limit of 128, too).
    pub fn deep_text() -> BoxedStrategy<String> {
        (1usize..400, any::<bool>())
            .prop_map(|(depth, objects)| nested_text(depth, objects, "1"))
            .boxed()
    }
}

#[cfg(test)]
mod properties {
    use super::strategies::{export_data, invoice, json, money, nested_text, text};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever `export_data` is, validation returns (Ok or a structural Err),
        /// and the score is the documented function of the findings.
        #[test]
        fn validation_never_panics_and_scores_its_findings(data in export_data()) {
            if let Ok(v) = validate_export_data(&data) {
                prop_assert_eq!(v.quality_score, quality_score(v.errors.len(), v.warnings.len()));
                prop_assert!(v.quality_score <= 100);
                // Deterministic.
                prop_assert_eq!(validate_export_data(&data), Ok(v));
            }
        }

        /// Invoice-shaped data always gets past the structure checks unless it has
        /// an unknown key or a non-object line; every finding names a known field.
        #[test]
        fn invoice_shaped_data_validates_to_findings_on_known_fields(data in invoice()) {
            if let Ok(v) = validate_export_data(&data) {
                for f in v.errors.iter().chain(&v.warnings) {
                    let name = f.field.rsplit('.').next().unwrap_or_default();
                    prop_assert!(
                        TOP_LEVEL_FIELDS.contains(&name) || LINE_FIELDS.contains(&name),
                        "{:?}", f
                    );
                }
            }
        }

        /// Any value: `parse_money` answers, and what it accepts is exact — its
        /// text parses back to the same decimal.
        #[test]
        fn parse_money_never_panics_and_round_trips(v in prop_oneof![money(), json()]) {
            if let Some(d) = parse_money(&v) {
                prop_assert_eq!(parse_money(&Value::String(d.to_string())), Some(d));
            }
        }

        #[test]
        fn date_and_currency_checks_never_panic(s in text()) {
            let _ = is_iso_date(&s);
            let _ = is_iso_4217(&s);
            let _ = currency_exponent(&s);
        }

        #[test]
        fn quality_score_is_within_0_to_100(errors in any::<usize>(), warnings in any::<usize>()) {
            let score = quality_score(errors, warnings);
            prop_assert!(score <= 100);
            prop_assert!(errors > 0 || warnings > 0 || score == 100);
        }

        /// Two line amounts anywhere in the Decimal range, and any total: never a
        /// panic, and the total is a mismatch exactly when it is more than a cent
        /// from the true sum (computed here in i128, which cannot overflow).
        #[test]
        fn line_sums_and_totals_at_the_edges_of_the_range_are_checked_exactly(
            a in any::<i128>(), b in any::<i128>(), total in any::<i128>()
        ) {
            const MAX: i128 = (1 << 96) - 1;
            let (a, b, total) = (a % (MAX + 1), b % (MAX + 1), total % (MAX + 1));
            let line = |description: &str, amount: i128| json!({
                "description": description, "quantity": "1",
                "unit_price": amount.to_string(), "amount": amount.to_string()
            });
            let data = json!({
                "vendor_name": "Acme", "invoice_number": "1", "invoice_date": "2026-01-05",
                "currency": "JPY", "total_amount": total.to_string(),
                "line_items": [line("a", a), line("b", b)]
            });
            let v = validate_export_data(&data).unwrap();
            let mismatch = v.errors.iter().any(|f| f.code == "total_mismatch");
            prop_assert_eq!(mismatch, (a + b - total).abs() > 1, "{:?}", v.errors);
            prop_assert!(v.errors.iter().all(|f| f.code == "total_mismatch"), "{:?}", v.errors);
        }
    }

    use serde_json::json;

    #[test]
    fn deeply_nested_export_data_is_a_data_error_or_findings_not_a_panic() {
        for depth in [1, 10, 127, 128, 129, 1000] {
            for objects in [false, true] {
                let text = nested_text(depth, objects, "1");
                if let Ok(data) = serde_json::from_str::<Value>(&text) {
                    let _ = validate_export_data(&data);
                    let _ = validate_export_data(&json!({ "line_items": [data] }));
                }
            }
        }
    }
}
