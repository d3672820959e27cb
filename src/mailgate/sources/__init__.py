"""Outside systems mailgate reads messages from (besides REST and SMTP): ``firestore``."""
