-- A note's sections: embed_sections and the rules in embed_section_rules.
CREATE EXTENSION IF NOT EXISTS clinembed;
\set SHOW_CONTEXT never
-- the seed: common headers of each note type, each with its canonical name
SELECT count(*) > 50 AS seeded, bool_and(seeded) AS all_seeded,
       count(DISTINCT name) > 20 AS names FROM embed_section_rules;
SELECT header, name FROM embed_section_rules WHERE header IN ('HPI', 'A/P', 'Impression', 'Brief Hospital Course') ORDER BY 1;

-- a history and physical: headers on lines of their own and before a
-- colon; lists, vitals and list items in capitals stay in their section
CREATE TEMP TABLE hp AS SELECT E'CHIEF COMPLAINT: chest pain x2 days\n'
    'HPI: 67 y/o M with CAD presents with chest pain at 10:30.\n'
    'MEDICATIONS:\n- aspirin 81 mg daily\n- metoprolol 25 mg BID\n'
    'PHYSICAL EXAM:\nBP: 142/91 HR: 104\nPt: alert\n'
    'ASSESSMENT AND PLAN:\n1. ACS: start heparin.\n2. HTN: continue metoprolol.\n' AS t;
SELECT s.section, s.name, s.header, s.char_start, s.char_end,
       substr(t, s.char_start + 1, s.char_end - s.char_start) AS text
  FROM hp, embed_sections(t) s ORDER BY s.section;
-- the sections cover the note, in order, without gaps
SELECT string_agg(substr(t, s.char_start + 1, s.char_end - s.char_start), '' ORDER BY s.section) = t AS covers
  FROM hp, embed_sections(t) s GROUP BY t;

-- a radiology report: headers inline, where a sentence starts
SELECT name, header FROM embed_sections(
    'INDICATION: Fever and cough. TECHNIQUE: PA and lateral. FINDINGS: The lungs are clear. IMPRESSION: No acute process.');
-- text before the first header is a section with no name; a note without
-- headers is one; an empty text has none
SELECT section, name, char_start, char_end FROM embed_sections(E'Admission Date: 2150-01-01\n\nHospital Course:\nDiuresed.');
SELECT section, name, header, char_start, char_end FROM embed_sections('Patient seen and examined. BP: 120/80 at 10:30, the plan: rest.');
SELECT count(*) AS empty FROM embed_sections('');
SELECT count(*) AS null_text FROM embed_sections(NULL);
-- characters, not bytes
SELECT char_start, char_end FROM embed_sections(E'Résumé café.\nIMPRESSION: négatif.') WHERE name IS NOT NULL;

-- rules of your own: seen by the next statement, and over a seeded rule for
-- the same header; only they are dumped
INSERT INTO embed_section_rules (header, name) VALUES ('Pt', 'patient'), ('PLAN', 'assessment_and_plan');
SELECT name FROM embed_sections(E'Pt: Jane Doe\nPlan: rest') ORDER BY section;
SELECT c.relname, e.extcondition FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY x(oid, i)
  JOIN pg_class c ON c.oid = x.oid WHERE e.extname = 'clinembed';
-- a canonical name is lower-case words joined by _, a header not blank
INSERT INTO embed_section_rules (header, name) VALUES ('Course', 'Hospital Course');
INSERT INTO embed_section_rules (header, name) VALUES ('  ', 'blank');
-- every role reads the rules; only their owner changes them
CREATE ROLE clinembed_sections_reader;
SET ROLE clinembed_sections_reader;
SELECT count(*) AS found FROM embed_sections(E'HPI: cough\nPlan: rest');
INSERT INTO embed_section_rules (header, name) VALUES ('Events', 'events');
RESET ROLE;
DROP ROLE clinembed_sections_reader;
DELETE FROM embed_section_rules WHERE NOT seeded;
SELECT name FROM embed_sections(E'Pt: Jane Doe\nPlan: rest') ORDER BY section;
DROP TABLE hp;
