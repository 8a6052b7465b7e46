-- The rules embed_sections finds a note's headers by (docs/long-notes.md,
-- "Sections"): a header as written, matched without regard to case or runs
-- of spaces, and its canonical name.  Seeded with the common headers of
-- history and physicals, progress notes, discharge summaries and radiology
-- reports (the library's list, _embed_default_section_rules()).  Rows you
-- add (seeded false) are kept by pg_dump and win over a seeded rule for the
-- same header.  The extension's owner changes them; every role reads them.
CREATE TABLE @extschema@.embed_section_rules (
    header text PRIMARY KEY CHECK (pg_catalog.btrim(header) OPERATOR(pg_catalog.<>) ''),
    name text NOT NULL CHECK (name OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]*$'),
    seeded boolean NOT NULL DEFAULT false
);
INSERT INTO @extschema@.embed_section_rules (header, name, seeded)
SELECT header, name, true FROM @extschema@._embed_default_section_rules();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.embed_section_rules', 'WHERE NOT seeded');
GRANT SELECT ON @extschema@.embed_section_rules TO PUBLIC;
