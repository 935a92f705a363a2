"""The privacy decisions: detection, redaction, pseudonyms, consent, audit. Plain Python, no Beam."""
