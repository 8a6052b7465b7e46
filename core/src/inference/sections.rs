//! The sections of a clinical note, found by rules (no model).
//!
//! Clinicians write notes in sections under headers: HISTORY OF PRESENT
//! ILLNESS, MEDICATIONS, ASSESSMENT AND PLAN, IMPRESSION.  A header is
//!
//! - a line of its own that is a known header, or is written in capitals,
//!   with or without a colon after it ("HOSPITAL COURSE", "Allergies:");
//! - a known header, or words in capitals, followed by a colon at the start
//!   of a line or of a sentence, its section's text after it on the same
//!   line ("Plan: follow up", "... stable. IMPRESSION: no acute ...").
//!
//! Never a word inside a sentence, a list item ("2. SEPSIS: ...", "- CHF:"),
//! or a label with a value ("BP: 120/80", "Pt: 67 y/o", "10:30"): words in
//! capitals that no rule knows need at least [`MIN_CAPITAL_LETTERS`]
//! letters, at most [`MAX_HEADER_WORDS`] words, no digit, and no digit right
//! after their colon.  Known headers are matched without regard to case or
//! runs of spaces, and map to a canonical name ([`DEFAULT_RULES`], which
//! users extend); a header in capitals that no rule knows is named by its
//! words in lower case joined by `_`.
//!
//! A section runs from its header to the next header (or the end of the
//! text); text before the first header, or a whole note without headers,
//! is one section with no name.  Offsets are in characters, as the chunk
//! windows' are.

use std::collections::HashMap;

/// Letters a header in capitals that no rule knows needs at least: "HPI"
/// and "CC" are known; "BP", "HR" and "CXR" are labels.
pub const MIN_CAPITAL_LETTERS: usize = 4;
/// Words a header has at most.
pub const MAX_HEADER_WORDS: usize = 6;

/// The headers every note type commonly uses (history and physicals,
/// progress notes, discharge summaries, radiology reports), each with its
/// canonical name: the seed of the rules table.
pub const DEFAULT_RULES: &[(&str, &str)] = &[
    ("Chief Complaint", "chief_complaint"),
    ("CC", "chief_complaint"),
    ("Reason for Visit", "chief_complaint"),
    ("Reason for Admission", "chief_complaint"),
    ("History of Present Illness", "history_of_present_illness"),
    ("HPI", "history_of_present_illness"),
    ("Present Illness", "history_of_present_illness"),
    ("Interval History", "interval_history"),
    ("Past Medical History", "past_medical_history"),
    ("PMH", "past_medical_history"),
    ("PMHx", "past_medical_history"),
    ("Past Surgical History", "past_surgical_history"),
    ("PSH", "past_surgical_history"),
    ("Medications", "medications"),
    ("Meds", "medications"),
    ("Current Medications", "medications"),
    ("Home Medications", "medications"),
    ("Medications on Admission", "medications"),
    ("Outpatient Medications", "medications"),
    ("Discharge Medications", "discharge_medications"),
    ("Allergies", "allergies"),
    ("Social History", "social_history"),
    ("SH", "social_history"),
    ("Family History", "family_history"),
    ("FH", "family_history"),
    ("Review of Systems", "review_of_systems"),
    ("ROS", "review_of_systems"),
    ("Physical Exam", "physical_exam"),
    ("Physical Examination", "physical_exam"),
    ("Exam", "physical_exam"),
    ("PE", "physical_exam"),
    ("Vital Signs", "vital_signs"),
    ("Vitals", "vital_signs"),
    ("Labs", "labs"),
    ("Laboratory Data", "labs"),
    ("Pertinent Results", "labs"),
    ("Imaging", "imaging"),
    ("Subjective", "subjective"),
    ("Objective", "objective"),
    ("Assessment and Plan", "assessment_and_plan"),
    ("Assessment & Plan", "assessment_and_plan"),
    ("Assessment/Plan", "assessment_and_plan"),
    ("A/P", "assessment_and_plan"),
    ("A&P", "assessment_and_plan"),
    ("Impression and Plan", "assessment_and_plan"),
    ("Assessment", "assessment"),
    ("Plan", "plan"),
    ("Hospital Course", "hospital_course"),
    ("Brief Hospital Course", "hospital_course"),
    ("Major Surgical or Invasive Procedure", "procedures"),
    ("Procedures", "procedures"),
    ("Discharge Diagnosis", "discharge_diagnosis"),
    ("Discharge Diagnoses", "discharge_diagnosis"),
    ("Discharge Condition", "discharge_condition"),
    ("Discharge Disposition", "discharge_disposition"),
    ("Discharge Instructions", "discharge_instructions"),
    ("Followup Instructions", "follow_up"),
    ("Follow-up", "follow_up"),
    ("Follow up", "follow_up"),
    ("Indication", "indication"),
    ("Clinical History", "indication"),
    ("Technique", "technique"),
    ("Comparison", "comparison"),
    ("Findings", "findings"),
    ("Impression", "impression"),
    ("Conclusion", "impression"),
];

/// One section of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The canonical name; None for text before the first header.
    pub name: Option<String>,
    /// The header as written (without its colon); None with `name`.
    pub header: Option<String>,
    /// Character offsets into the text, `[start, end)`, the header included.
    pub char_start: usize,
    pub char_end: usize,
}

/// Headers by rule: each known header (matched without regard to case or
/// runs of spaces) and its canonical name.
#[derive(Debug, Clone)]
pub struct Sectionizer {
    known: HashMap<String, String>,
}

impl Default for Sectionizer {
    fn default() -> Self {
        Sectionizer::new(DEFAULT_RULES.iter().map(|&(h, n)| (h, n)))
    }
}

/// A header as rules compare it: lower case, single spaces, no colon.
fn normalized(header: &str) -> String {
    header
        .trim()
        .trim_end_matches(':')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether a header no rule knows is written in capitals: letters in
/// upper case (and `/`, `&`, `-`, `,`, `(`, `)` between them), at least
/// [`MIN_CAPITAL_LETTERS`] letters, at most [`MAX_HEADER_WORDS`] words.
fn capitals(header: &str) -> bool {
    let letters = header.chars().filter(|c| c.is_alphabetic()).count();
    letters >= MIN_CAPITAL_LETTERS
        && header.split_whitespace().count() <= MAX_HEADER_WORDS
        && header.chars().all(|c| {
            (c.is_alphabetic() && !c.is_lowercase())
                || c.is_whitespace()
                || matches!(c, '/' | '&' | '-' | ',' | '(' | ')')
        })
}

/// A line that starts a list item: `-`, `*`, `•`, `#`, or a number or
/// letter followed by `.` or `)`.
fn list_item(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with(['-', '*', '•', '#']) {
        return true;
    }
    let marker: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let rest = &t[marker.len()..];
    (!marker.is_empty() && rest.starts_with(['.', ')']))
        || (rest.len() > 1
            && rest.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && rest[1..].starts_with(')'))
}

impl Sectionizer {
    /// Rules as (header, canonical name) pairs; a later pair for the same
    /// header wins.
    pub fn new<H: AsRef<str>, N: AsRef<str>>(rules: impl IntoIterator<Item = (H, N)>) -> Self {
        Sectionizer {
            known: rules
                .into_iter()
                .map(|(h, n)| (normalized(h.as_ref()), n.as_ref().to_string()))
                .collect(),
        }
    }

    /// The canonical name of `header` (as written, without its colon) when
    /// it is one; `after` is what follows its colon on its line, None for a
    /// line of its own.
    fn name(&self, header: &str, after: Option<&str>) -> Option<String> {
        let header = header.trim();
        if header.is_empty() || header.split_whitespace().count() > MAX_HEADER_WORDS {
            return None;
        }
        if let Some(name) = self.known.get(&normalized(header)) {
            return Some(name.clone());
        }
        let value_follows = after
            .and_then(|a| a.trim_start().chars().next())
            .is_some_and(|c| c.is_ascii_digit());
        (capitals(header) && !value_follows).then(|| {
            header
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join("_")
                .to_lowercase()
        })
    }

    /// The headers of one line (`line` starts at byte `at` of the text):
    /// (byte offset, header as written, canonical name).
    fn headers_of_line(&self, line: &str, at: usize, found: &mut Vec<(usize, String, String)>) {
        let content = line.trim_end();
        let lead = content.len() - content.trim_start().len();
        let content = content.trim_start();
        if content.is_empty() || list_item(content) {
            return;
        }
        // A line of its own.
        let bare = content.strip_suffix(':').unwrap_or(content);
        if !bare.contains(':') && !bare.ends_with('.') {
            if let Some(name) = self.name(bare, None) {
                found.push((at + lead, bare.trim().to_string(), name));
                return;
            }
        }
        // A header and a colon where a sentence starts: the line's start,
        // or after `.`, `!` or `?` and a space that end a sentence (not a
        // list number's `2.`).
        let mut starts = vec![0];
        for (i, c) in content.char_indices() {
            if matches!(c, '.' | '!' | '?') && content[i + 1..].starts_with(' ') {
                let before = content[..i].chars().next_back();
                if before.is_some_and(|b| b.is_alphabetic() || b == ')') {
                    starts.push(i + 1);
                }
            }
        }
        for start in starts {
            let rest = &content[start..];
            let Some(colon) = rest.find(':') else {
                continue;
            };
            let header = &rest[..colon];
            // a sentence's end before the colon: not this sentence's header
            if header.contains(['.', '!', '?']) && !self.known.contains_key(&normalized(header)) {
                continue;
            }
            if let Some(name) = self.name(header, Some(&rest[colon + 1..])) {
                let skip = header.len() - header.trim_start().len();
                found.push((at + lead + start + skip, header.trim().to_string(), name));
            }
        }
    }

    /// The sections of `text`, in order; none for a text with no
    /// characters but white space.
    pub fn sections(&self, text: &str) -> Vec<Section> {
        if text.trim().is_empty() {
            return Vec::new();
        }
        let mut found = Vec::new();
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            self.headers_of_line(line, at, &mut found);
            at += line.len();
        }
        // Byte offsets to character offsets, counted once along the text
        // (the headers are in order).
        let mut counted = (0, 0);
        let mut chars = |byte: usize| {
            counted = (byte, counted.1 + text[counted.0..byte].chars().count());
            counted.1
        };
        let first = found.first().map(|f| f.0).unwrap_or(text.len());
        let mut sections = Vec::new();
        if !text[..first].trim().is_empty() {
            sections.push(Section {
                name: None,
                header: None,
                char_start: 0,
                char_end: chars(first),
            });
        }
        let mut start = chars(first);
        for (i, (_, header, name)) in found.iter().enumerate() {
            let end = chars(found.get(i + 1).map(|f| f.0).unwrap_or(text.len()));
            sections.push(Section {
                name: Some(name.clone()),
                header: Some(header.clone()),
                char_start: start,
                char_end: end,
            });
            start = end;
        }
        sections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, header, the section's text) of each section.
    fn cut(text: &str) -> Vec<(Option<String>, Option<String>, String)> {
        let chars: Vec<char> = text.chars().collect();
        Sectionizer::default()
            .sections(text)
            .into_iter()
            .map(|s| {
                (
                    s.name,
                    s.header,
                    chars[s.char_start..s.char_end].iter().collect(),
                )
            })
            .collect()
    }

    fn names(text: &str) -> Vec<Option<String>> {
        cut(text).into_iter().map(|s| s.0).collect()
    }

    fn some(names: &[&str]) -> Vec<Option<String>> {
        names.iter().map(|n| Some(n.to_string())).collect()
    }

    #[test]
    fn a_history_and_physical() {
        let note = "CHIEF COMPLAINT: chest pain x2 days\n\
                    HPI: 67 y/o M with h/o CAD presents with substernal chest pain.\n\
                    PAST MEDICAL HISTORY:\n\
                    1. CAD s/p PCI 2019\n\
                    2. HTN\n\
                    MEDICATIONS:\n\
                    - aspirin 81 mg daily\n\
                    - metoprolol 25 mg BID\n\
                    ALLERGIES: NKDA\n\
                    SOCIAL HISTORY: former smoker, 30 pack-years.\n\
                    PHYSICAL EXAM:\n\
                    BP: 142/91 HR: 104 RR: 22\n\
                    Gen: NAD\n\
                    ASSESSMENT AND PLAN:\n\
                    1. ACS: start heparin, cardiology consult.\n\
                    2. HTN: continue metoprolol.\n";
        assert_eq!(
            names(note),
            some(&[
                "chief_complaint",
                "history_of_present_illness",
                "past_medical_history",
                "medications",
                "allergies",
                "social_history",
                "physical_exam",
                "assessment_and_plan",
            ])
        );
        let sections = cut(note);
        // a section holds its header, its text, and nothing of the next
        assert_eq!(
            sections[3].2,
            "MEDICATIONS:\n- aspirin 81 mg daily\n- metoprolol 25 mg BID\n"
        );
        assert_eq!(sections[1].1.as_deref(), Some("HPI"));
        // the sections cover the note, in order, without gaps
        let joined: String = sections.iter().map(|s| s.2.as_str()).collect();
        assert_eq!(joined, note);
    }

    #[test]
    fn a_progress_note_in_mixed_case() {
        let note = "Subjective: Feels better, tolerating diet.\n\
                    Objective: Afebrile. Vitals: T 37.1 HR 88.\n\
                    Labs: WBC 9.1, Cr 1.0\n\
                    Assessment: Improving pneumonia.\n\
                    Plan: Switch to PO antibiotics. Discharge tomorrow.";
        assert_eq!(
            names(note),
            some(&[
                "subjective",
                "objective",
                "vital_signs",
                "labs",
                "assessment",
                "plan"
            ])
        );
    }

    #[test]
    fn a_discharge_summary() {
        let note = "Admission Date: 2150-01-01  Discharge Date: 2150-01-05\n\
                    \n\
                    Chief Complaint:\n\
                    Shortness of breath\n\
                    \n\
                    Major Surgical or Invasive Procedure:\n\
                    None\n\
                    \n\
                    History of Present Illness:\n\
                    Mr. ___ is a 72 year old man with CHF who presents with dyspnea.\n\
                    \n\
                    Brief Hospital Course:\n\
                    # CHF EXACERBATION: diuresed with IV furosemide.\n\
                    # AKI: resolved.\n\
                    \n\
                    Discharge Medications:\n\
                    1. Furosemide 40 mg PO daily\n\
                    \n\
                    Discharge Diagnosis:\n\
                    Acute on chronic systolic heart failure\n\
                    \n\
                    Discharge Instructions:\n\
                    Weigh yourself every morning.\n\
                    \n\
                    Followup Instructions:\n\
                    ___\n";
        let sections = cut(note);
        // the dates before the first header: one section with no name
        assert_eq!(sections[0].0, None);
        assert!(sections[0].2.starts_with("Admission Date"));
        assert_eq!(
            names(note)[1..].to_vec(),
            some(&[
                "chief_complaint",
                "procedures",
                "history_of_present_illness",
                "hospital_course",
                "discharge_medications",
                "discharge_diagnosis",
                "discharge_instructions",
                "follow_up",
            ])
        );
        // list items in capitals stay in their section
        assert!(sections[4].2.contains("# CHF EXACERBATION: diuresed"));
    }

    #[test]
    fn a_radiology_report_with_inline_headers() {
        let note = "EXAMINATION: CHEST (PA AND LAT)\n\
                    INDICATION: Fever and cough. TECHNIQUE: PA and lateral views. \
                    COMPARISON: None. FINDINGS: The lungs are clear. There is no effusion. \
                    IMPRESSION: No acute cardiopulmonary process.";
        let sections = cut(note);
        assert_eq!(
            names(note),
            some(&[
                "examination",
                "indication",
                "technique",
                "comparison",
                "findings",
                "impression"
            ])
        );
        assert_eq!(
            sections[5].2,
            "IMPRESSION: No acute cardiopulmonary process."
        );
        assert_eq!(
            sections[4].2,
            "FINDINGS: The lungs are clear. There is no effusion. "
        );
        assert_eq!(sections[5].1.as_deref(), Some("IMPRESSION"));
    }

    #[test]
    fn labels_lists_and_times_are_not_headers() {
        for text in [
            "Pt: 67 y/o female, seen at 10:30 for follow-up.",
            "BP: 120/80, HR: 72, SpO2: 98% RA.",
            "TEMP: 38.5 and rising.",
            "We discussed the plan: rest and fluids.",
            "She reports that the assessment: was fine.",
            "2. SEPSIS: on vancomycin and cefepime.",
            "- CHF: continue lasix",
            "a) PNEUMONIA: resolved",
            "Dr. Smith: called at 14:05.",
            "No acute distress.",
        ] {
            assert_eq!(names(text), vec![None], "{text}");
        }
    }

    #[test]
    fn a_note_without_headers_is_one_section() {
        let text = "Patient seen and examined. Doing well.";
        assert_eq!(cut(text), vec![(None, None, text.to_string())]);
        assert!(Sectionizer::default().sections("").is_empty());
        assert!(Sectionizer::default().sections(" \n\t ").is_empty());
    }

    #[test]
    fn offsets_are_characters_and_headers_match_loosely() {
        let text = "Résumé ünd Café.\nassessment   AND plan:\ncontinue.";
        let s = Sectionizer::default().sections(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name.as_deref(), Some("assessment_and_plan"));
        assert_eq!(s[1].header.as_deref(), Some("assessment   AND plan"));
        assert_eq!(s[1].char_start, 17);
        assert_eq!(s[1].char_end, text.chars().count());
        // a Windows line end
        assert_eq!(
            names("HPI: cough\r\nPLAN: rest\r\n"),
            some(&["history_of_present_illness", "plan"])
        );
    }

    #[test]
    fn users_rules_extend_and_override() {
        let s = Sectionizer::new(
            DEFAULT_RULES
                .iter()
                .map(|&(h, n)| (h.to_string(), n.to_string()))
                .chain([
                    ("Pt".to_string(), "patient".to_string()),
                    ("Plan".to_string(), "assessment_and_plan".to_string()),
                ]),
        );
        let names: Vec<_> = s
            .sections("Pt: Jane\nPlan: rest")
            .into_iter()
            .map(|x| x.name)
            .collect();
        assert_eq!(names, some(&["patient", "assessment_and_plan"]));
    }
}
