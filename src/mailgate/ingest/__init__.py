"""Turn outside input (REST JSON, SMTP sessions, Firestore documents) into queued messages."""

from mailgate.ingest.submission import Rejected, SubmissionReport, Submissions, parse_message_json

__all__ = ["Rejected", "SubmissionReport", "Submissions", "parse_message_json"]
