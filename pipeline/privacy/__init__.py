"""Personal data's lifecycle (README "Personal data"): forgetting a family on request (GDPR Art. 17),
retention periods after which photos, face data and books are deleted (COPPA's "retain only as long
as necessary"), and making sure deleted rows never leave their files behind."""
