"""A Firestore ``mail`` collection as a source of messages.

* :mod:`.contracts` — pure: which contract a document follows, whether it needs work,
  and the message JSON it stands for (Handlebars templates rendered in a sandbox);
* :mod:`.reader` — the reads a document needs (users by uid, templates) and then
  :func:`.contracts.to_message`;
* :mod:`.source` and :mod:`.writeback` — watching, leasing and writing outcomes back.

Nothing is imported here, so importing :mod:`.contracts` alone stays cheap.
"""
