"""Turn outside input (REST JSON, SMTP sessions, Firestore documents) into queued messages.

The package imports nothing itself: ``mailgate.ingest.tls``, run as a child process
to make a certificate, must not load the REST submission path with it.
"""
