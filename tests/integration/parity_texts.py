"""The texts every parity check embeds: plain clinical English, abbreviations,
numbers, scripts, emoji, empty and whitespace-only input, control characters
and texts over the 512-token limit."""

LONG = ("Patient admitted with community acquired pneumonia, treated with ceftriaxone and azithromycin. " * 60).strip()

TEXTS = [
    ("plain", "Patient denies chest pain or shortness of breath."),
    ("abbreviations", "Pt c/o SOB x3d, DOE, orthopnea; h/o CHF, HFrEF EF 30%."),
    ("numbers", "BP 142/91, HR 104, RR 22, T 38.4 C, SpO2 91% RA, K 6.1, Cr 3.2."),
    ("accents", "Café résumé naïve coöperate façade Zürich São Paulo."),
    ("combining", "Cafe\u0301 with a combining acute accent."),
    ("chinese", "患者主诉胸痛三天，伴有呼吸困难。"),
    ("japanese", "胸痛と息切れがあります。"),
    ("korean", "환자는 흉통을 호소합니다."),
    ("cyrillic", "Пациент жалуется на боль в груди."),
    ("arabic", "يشكو المريض من ألم في الصدر."),
    ("hindi", "रोगी को सीने में दर्द है।"),
    ("greek", "Ο ασθενής έχει πόνο στο στήθος."),
    ("emoji", "Feeling better today 🙂👍 🫀💊🩺"),
    ("punctuation_only", "?!...;;--()[]{}"),
    ("empty", ""),
    ("whitespace", " \t\n  \r\n "),
    ("zero_width", "chest\u200bpain\u200d and \ufeffBOM"),
    ("mixed_case", "ACUTE Kidney INJURY with HyPeRkAlEmIa"),
    ("long_word", "x" * 150 + " pneumonoultramicroscopicsilicovolcanoconiosis"),
    ("url_email", "See https://example.org/notes?id=42 or mail nurse@example.org"),
    ("newlines", "DISCHARGE SUMMARY\nDIAGNOSIS: sepsis.\n\nPLAN:\n1. Vancomycin\n2. Follow up"),
    ("over_512", LONG),
    ("over_512_cjk", "胸痛" * 600),
    ("single_char", "a"),
    ("control_chars", "fever\x01\x02 chills\x7f rigors"),
]
