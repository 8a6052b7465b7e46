//! A note's sections (`clinembed_core::inference::sections`): the rules
//! table they are found by (`sql/sections.sql`) and `embed_sections`.

use std::cell::RefCell;
use std::rc::Rc;

use clinembed_core::inference::sections::{Sectionizer, DEFAULT_RULES};
use clinembed_core::rows::statements;
use pgrx::prelude::*;

use crate::pg::catalog::extension_schema;
use crate::pg::spi::select_two;

extension_sql_file!(
    "../../sql/sections.sql",
    name = "sections",
    requires = [_embed_default_section_rules]
);

/// The library's seed rules: each header and its canonical name.
#[pg_extern(immutable, parallel_safe)]
fn _embed_default_section_rules(
) -> TableIterator<'static, (name!(header, String), name!(name, String))> {
    TableIterator::new(
        DEFAULT_RULES
            .iter()
            .map(|&(h, n)| (h.to_string(), n.to_string())),
    )
}

/// The sections of a text, in order: each one's canonical name and its
/// header as written (both NULL for text before the first header, or a
/// text without headers), and its character span (`substr(text,
/// char_start + 1, char_end - char_start)` is its text, the header
/// included).  Headers are found by the rules in `embed_section_rules`.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe, strict)]
fn embed_sections(
    text: &str,
) -> TableIterator<
    'static,
    (
        name!(section, i32),
        name!(name, Option<String>),
        name!(header, Option<String>),
        name!(char_start, i32),
        name!(char_end, i32),
    ),
> {
    let sections = sectionizer().sections(text);
    TableIterator::new(sections.into_iter().enumerate().map(|(i, s)| {
        (
            i as i32 + 1,
            s.name,
            s.header,
            s.char_start as i32,
            s.char_end as i32,
        )
    }))
}

/// A statement (its start) and a command of it.
type Moment = (pg_sys::TimestampTz, pg_sys::CommandId);

thread_local! {
    /// The rules as a statement and command saw them.
    static RULES: RefCell<Option<(Moment, Rc<Sectionizer>)>> = const { RefCell::new(None) };
}

/// The sectionizer with the rules table's rules, read once per statement
/// and command (a change to the rules is seen by the next statement, or the
/// next command of a function).
pub(crate) fn sectionizer() -> Rc<Sectionizer> {
    // SAFETY: plain reads of the current transaction's state.
    let now = unsafe {
        (
            pg_sys::GetCurrentStatementStartTimestamp(),
            pg_sys::GetCurrentCommandId(false),
        )
    };
    if let Some((at, s)) = RULES.with(|r| r.borrow().clone()) {
        if at == now {
            return s;
        }
    }
    let (headers, names) = select_two::<Vec<String>, Vec<String>>(
        &statements::section_rules(&extension_schema()),
        &[],
    );
    let s = Rc::new(Sectionizer::new(
        headers
            .unwrap_or_default()
            .into_iter()
            .zip(names.unwrap_or_default()),
    ));
    RULES.with(|r| *r.borrow_mut() = Some((now, s.clone())));
    s
}
