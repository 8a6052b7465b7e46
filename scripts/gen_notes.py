#!/usr/bin/env python3
"""Deterministic generator of synthetic clinical notes (no real patient data).

The mix follows a hospital's note stream:
  nursing notes      short   (~40%)
  progress notes     medium  (~30%)
  radiology reports  medium  (~15%)
  discharge summaries long, most past 512 tokens (~15%)

With the BERT uncased tokenizer this gives a median near 110 tokens, a mean
near 290 before truncation, and about 15% of notes over 512 tokens.  Each note
is about one clinical topic, so similarity search has a right answer.

Output: PostgreSQL COPY text format, columns
  note_id, patient_id, note_type, topic, exp_text
With --queries, labelled search queries for the same notes instead, columns
  query, kind, note_id
one row per relevant note: the notes whose text holds the query's phrase.
Kind "exact" queries are a drug, a dose or a value as written in notes (where
full-text search must help); kind "paraphrase" queries say a phrase of the
notes in other words (where the vectors must).
Same seed and count, same bytes, on any Python 3.
"""

import argparse
import random
import sys

TOPICS = {
    "cardiac": {
        "problem": ["chest pain", "NSTEMI", "atrial fibrillation with rapid ventricular response", "acute decompensated heart failure", "unstable angina"],
        "finding": ["troponin elevated at 0.84", "ST depressions in V4-V6", "BNP 1840", "irregularly irregular rhythm", "bilateral lower extremity edema", "JVD to the angle of the jaw", "S3 gallop"],
        "plan": ["continue heparin drip", "cardiology consulted for catheterization", "start metoprolol tartrate 25 mg BID", "furosemide 40 mg IV BID", "aspirin and atorvastatin 80 mg", "echo ordered"],
        "study": "ECHOCARDIOGRAM",
        "impression": ["Ejection fraction 35% with global hypokinesis", "Moderate mitral regurgitation", "Left atrial enlargement", "No pericardial effusion"],
    },
    "respiratory": {
        "problem": ["community acquired pneumonia", "COPD exacerbation", "acute hypoxic respiratory failure", "asthma exacerbation", "pulmonary embolism"],
        "finding": ["O2 sat 88% on room air", "coarse rhonchi at the right base", "diffuse expiratory wheezes", "productive cough with green sputum", "respiratory rate 28", "D-dimer elevated"],
        "plan": ["ceftriaxone and azithromycin", "nebulized albuterol and ipratropium q4h", "prednisone 40 mg daily", "wean oxygen to keep sat above 92%", "CT angiogram of the chest", "incentive spirometry"],
        "study": "CHEST X-RAY",
        "impression": ["Right lower lobe consolidation", "Hyperinflated lungs without focal consolidation", "Small bilateral pleural effusions", "No pneumothorax"],
    },
    "renal": {
        "problem": ["acute kidney injury", "hyperkalemia", "chronic kidney disease stage 4", "urinary tract infection", "obstructive uropathy"],
        "finding": ["creatinine 3.2 from baseline 1.1", "potassium 6.1", "urine output 200 mL over 12 hours", "BUN 64", "foley placed with 900 mL return", "peaked T waves"],
        "plan": ["hold lisinopril and NSAIDs", "IV fluids at 100 mL/h", "renal ultrasound", "nephrology consulted", "calcium gluconate, insulin and dextrose", "strict intake and output"],
        "study": "RENAL ULTRASOUND",
        "impression": ["Moderate right hydronephrosis", "Echogenic kidneys consistent with medical renal disease", "No renal calculi", "Bladder distended"],
    },
    "gastro": {
        "problem": ["upper GI bleed", "acute pancreatitis", "small bowel obstruction", "alcoholic hepatitis", "Clostridioides difficile colitis"],
        "finding": ["hemoglobin dropped from 11.2 to 7.9", "lipase 2300", "abdominal distension with hypoactive bowel sounds", "melena in the rectal vault", "bilirubin 6.4", "epigastric tenderness"],
        "plan": ["pantoprazole 40 mg IV BID", "GI consulted for EGD", "NPO with nasogastric decompression", "transfuse one unit PRBC", "oral vancomycin", "surgery following"],
        "study": "CT ABDOMEN AND PELVIS",
        "impression": ["Dilated small bowel loops with transition point in the right lower quadrant", "Peripancreatic fat stranding", "Hepatic steatosis", "No free air"],
    },
    "neuro": {
        "problem": ["acute ischemic stroke", "new onset seizure", "altered mental status", "subarachnoid hemorrhage", "transient ischemic attack"],
        "finding": ["right sided facial droop", "left arm drift", "expressive aphasia", "NIHSS 8", "GCS 13", "postictal confusion"],
        "plan": ["neurology stroke team activated", "levetiracetam 500 mg BID", "MRI brain with diffusion", "permissive hypertension", "neuro checks q1h", "EEG ordered"],
        "study": "CT HEAD WITHOUT CONTRAST",
        "impression": ["Hypodensity in the left MCA territory", "No intracranial hemorrhage", "Chronic small vessel ischemic changes", "No midline shift"],
    },
    "ortho": {
        "problem": ["right hip fracture", "distal radius fracture", "lumbar compression fracture", "septic knee", "ankle fracture after a fall"],
        "finding": ["shortened and externally rotated right leg", "point tenderness over the distal radius", "swelling of the left knee with effusion", "pain 8/10 with movement", "neurovascularly intact distally"],
        "plan": ["orthopedics consulted for ORIF", "splint and elevate", "physical therapy evaluation", "enoxaparin for DVT prophylaxis", "oxycodone 5 mg q4h PRN pain", "arthrocentesis"],
        "study": "X-RAY RIGHT HIP",
        "impression": ["Displaced femoral neck fracture", "Comminuted distal radius fracture with dorsal angulation", "Joint effusion", "Diffuse osteopenia"],
    },
    "endocrine": {
        "problem": ["diabetic ketoacidosis", "hypoglycemia", "hyperosmolar hyperglycemic state", "adrenal insufficiency", "thyroid storm"],
        "finding": ["glucose 512 with anion gap 24", "beta-hydroxybutyrate 6.2", "fingerstick glucose 42", "HbA1c 11.8%", "TSH undetectable", "polyuria and polydipsia"],
        "plan": ["insulin drip per DKA protocol", "potassium repletion", "D50 given", "endocrinology consulted", "transition to basal bolus insulin", "diabetes education"],
        "study": "CHEST X-RAY",
        "impression": ["No acute cardiopulmonary process", "Clear lungs", "Normal heart size", "No effusion"],
    },
    "infectious": {
        "problem": ["sepsis of urinary source", "cellulitis of the left leg", "bacteremia", "osteomyelitis", "febrile neutropenia"],
        "finding": ["temperature 39.2 C", "lactate 4.1", "WBC 18.4", "blood cultures growing gram positive cocci in clusters", "erythema spreading past the marked border", "hypotension to 84/50"],
        "plan": ["vancomycin and piperacillin-tazobactam", "30 mL/kg fluid bolus", "repeat lactate in 2 hours", "infectious disease consulted", "remove peripheral line", "de-escalate antibiotics per cultures"],
        "study": "MRI LEFT FOOT",
        "impression": ["Marrow edema of the first metatarsal consistent with osteomyelitis", "Soft tissue abscess", "No fracture", "Subcutaneous edema"],
    },
}

FIRST = ["Patient", "Pt", "The patient"]
NURSING_OPEN = ["Resting comfortably in bed.", "Alert and oriented x3.", "Call light within reach.", "Family at bedside.", "Up to chair with assistance.", "Slept poorly overnight."]
VITALS = ["BP {bp}/{dp}, HR {hr}, RR {rr}, T {t}, SpO2 {s}%.", "VS: {bp}/{dp} {hr} {rr} {t} {s}% RA."]
GENERIC = [
    "Tolerating diet without nausea.", "Ambulating in the hallway with a walker.", "Pain controlled on current regimen.",
    "Skin intact, no pressure injuries noted.", "Voiding without difficulty.", "Discussed plan of care with patient and family.",
    "Medications reconciled.", "IV site clean, dry and intact.", "Fall precautions in place.", "Denies nausea, vomiting or diarrhea.",
    "Lungs clear to auscultation bilaterally.", "Heart regular rate and rhythm without murmurs.", "Abdomen soft, non-tender, non-distended.",
    "Extremities warm and well perfused.", "No acute distress.", "Will continue to monitor.",
]
HISTORY = ["hypertension", "type 2 diabetes", "hyperlipidemia", "coronary artery disease", "COPD", "chronic kidney disease", "obesity", "atrial fibrillation", "depression", "hypothyroidism", "GERD", "osteoarthritis"]
MEDS = ["lisinopril 10 mg daily", "metformin 1000 mg BID", "atorvastatin 40 mg nightly", "aspirin 81 mg daily", "levothyroxine 75 mcg daily", "omeprazole 20 mg daily", "sertraline 50 mg daily", "apixaban 5 mg BID", "amlodipine 5 mg daily", "insulin glargine 20 units nightly"]


def vitals(r):
    return r.choice(VITALS).format(bp=r.randint(92, 178), dp=r.randint(50, 98), hr=r.randint(54, 128), rr=r.randint(12, 30),
                                   t=round(r.uniform(36.1, 39.4), 1), s=r.randint(86, 100))


def sentences(r, topic, n, narrative=False):
    """n sentences about the topic; `narrative` (a history or a hospital
    course) writes plans as prose, not as "Plan:" labels, which would be
    headers of sections of their own.  Both draw the same random numbers."""
    t = TOPICS[topic]
    out = []
    for _ in range(n):
        k = r.random()
        if k < 0.35:
            out.append(f"{r.choice(FIRST)} with {r.choice(t['finding'])}.")
        elif k < 0.6:
            plan = r.choice(t["plan"])
            out.append(f"{plan[0].upper()}{plan[1:]}." if narrative else f"Plan: {plan}.")
        elif k < 0.75:
            out.append(f"Assessment consistent with {r.choice(t['problem'])}.")
        else:
            out.append(r.choice(GENERIC))
    return out


def nursing(r, topic):
    parts = [r.choice(NURSING_OPEN), vitals(r)] + sentences(r, topic, r.randint(1, 5))
    return " ".join(parts)


def progress(r, topic):
    t = TOPICS[topic]
    s = [f"PROGRESS NOTE. Hospital day {r.randint(1, 12)}.",
         f"S: {r.choice(FIRST)} admitted for {r.choice(t['problem'])}. " + " ".join(sentences(r, topic, r.randint(2, 6))),
         f"O: {vitals(r)} " + " ".join(sentences(r, topic, r.randint(2, 5))),
         f"A/P: {r.choice(t['problem'])}. " + " ".join(f"Plan: {r.choice(t['plan'])}." for _ in range(r.randint(2, 5)))]
    return "\n".join(s)


def radiology(r, topic):
    t = TOPICS[topic]
    s = [f"EXAM: {t['study']}.",
         f"INDICATION: {r.choice(t['problem'])}, {r.choice(t['finding'])}.",
         "COMPARISON: " + r.choice(["None.", "Prior study from last year.", "Outside films reviewed."]),
         "FINDINGS: " + " ".join(r.choice(t["impression"]) + "." for _ in range(r.randint(4, 10))),
         "IMPRESSION: " + " ".join(f"{i + 1}. {r.choice(t['impression'])}." for i in range(r.randint(1, 4)))]
    return "\n".join(s)


def discharge(r, topic):
    t = TOPICS[topic]
    hpi = " ".join(sentences(r, topic, r.randint(8, 18), narrative=True))
    course = "\n".join(" ".join(sentences(r, topic, r.randint(4, 9), narrative=True)) for _ in range(r.randint(10, 25)))
    s = ["DISCHARGE SUMMARY",
         f"ADMISSION DIAGNOSIS: {r.choice(t['problem'])}.",
         f"DISCHARGE DIAGNOSIS: {r.choice(t['problem'])}.",
         "PAST MEDICAL HISTORY: " + ", ".join(r.sample(HISTORY, r.randint(3, 8))) + ".",
         f"HISTORY OF PRESENT ILLNESS: {r.randint(34, 92)} year old with {r.choice(t['finding'])}. {hpi}",
         f"HOSPITAL COURSE:\n{course}",
         "PROCEDURES: " + r.choice([t["study"].title(), "None", "Central line placement", "Thoracentesis"]) + ".",
         "DISCHARGE MEDICATIONS: " + "; ".join(r.sample(MEDS, r.randint(4, 9))) + ".",
         f"DISCHARGE CONDITION: {r.choice(['Stable', 'Improved', 'Fair'])}. {vitals(r)}",
         "FOLLOW UP: " + " ".join(f"Plan: {r.choice(t['plan'])}." for _ in range(r.randint(2, 5)))]
    return "\n".join(s)


# (query, the phrase of the notes it asks for): exact terms ask for
# themselves; paraphrases share no stemmed word with the phrase that all
# their other words would let a full-text match through.
EXACT = ["levetiracetam 500 mg BID", "metoprolol tartrate 25 mg BID", "pantoprazole 40 mg IV BID",
         "furosemide 40 mg IV BID", "prednisone 40 mg daily", "oxycodone 5 mg q4h PRN pain",
         "apixaban 5 mg BID", "levothyroxine 75 mcg daily", "insulin glargine 20 units nightly",
         "potassium 6.1", "lipase 2300", "BNP 1840", "NIHSS 8", "HbA1c 11.8%", "lactate 4.1",
         "WBC 18.4", "bilirubin 6.4", "creatinine 3.2 from baseline 1.1", "GCS 13", "TSH undetectable"]
PARAPHRASES = [("heart attack", "NSTEMI"),
               ("blood clot in the lungs", "pulmonary embolism"),
               ("broken hip bone", "right hip fracture"),
               ("broken wrist", "distal radius fracture"),
               ("kidneys stopped working suddenly", "acute kidney injury"),
               ("dangerously low blood sugar", "hypoglycemia"),
               ("bleeding in the upper gut", "upper GI bleed"),
               ("fast irregular heartbeat", "atrial fibrillation with rapid ventricular response"),
               ("inflamed pancreas", "acute pancreatitis"),
               ("bone infection", "osteomyelitis"),
               ("skin infection spreading on the leg", "cellulitis of the left leg"),
               ("face drooping on one side", "right sided facial droop"),
               ("trouble finding words when speaking", "expressive aphasia"),
               ("blocked intestine", "small bowel obstruction"),
               ("overactive thyroid crisis", "thyroid storm"),
               ("too much potassium in the blood", "hyperkalemia"),
               ("fluid around both lungs", "Small bilateral pleural effusions"),
               ("lung infection caught outside hospital", "community acquired pneumonia"),
               ("mini stroke that resolved", "transient ischemic attack"),
               ("fatty liver", "Hepatic steatosis")]


def queries(count, seed):
    """(query, kind, note_id) for every note whose text holds the query's
    phrase (case-insensitive), queries in the order above, notes by id;
    queries no note answers are left out."""
    texts = [(i, text.lower()) for i, _, _, _, text in notes(count, seed)]
    asked = [(q, "exact", q) for q in EXACT] + [(q, "paraphrase", p) for q, p in PARAPHRASES]
    for query, kind, phrase in asked:
        for i, text in texts:
            if phrase.lower() in text:
                yield query, kind, i


KINDS = [("nursing", 0.40, nursing), ("progress", 0.30, progress), ("radiology", 0.15, radiology), ("discharge", 0.15, discharge)]


def notes(count, seed):
    r = random.Random(seed)
    topics = sorted(TOPICS)
    for i in range(1, count + 1):
        x, acc = r.random(), 0.0
        for kind, p, make in KINDS:
            acc += p
            if x < acc:
                break
        topic = r.choice(topics)
        yield i, r.randint(1000, 1000 + count // 3), kind, topic, make(r, topic)


def copy_escape(s):
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--queries", action="store_true", help="write the labelled queries, not the notes")
    args = ap.parse_args()
    out = sys.stdout
    rows = queries(args.count, args.seed) if args.queries else notes(args.count, args.seed)
    for row in rows:
        out.write("\t".join(copy_escape(str(v)) for v in row) + "\n")


if __name__ == "__main__":
    main()
