"""A mirror of a contact source that applies batches as the core does (a
full read replaces, an incremental one patches) and checks the invariants
of every batch: shared by the contact-source contract suite and the Google
tests."""

from __future__ import annotations

from syncd.model import Contact, ContactBatch
from syncd.ports import ContactSource


class Mirror:
    """Applies batches as the core does, and checks the batch invariants."""

    def __init__(self, source: ContactSource) -> None:
        self.source = source
        self.cursor: str | None = None
        self.contacts: dict[str, Contact] = {}

    def read(self) -> ContactBatch:
        batch = self.source.read(self.cursor)
        uids = [c.uid for c in batch.contacts]
        assert len(uids) == len(set(uids)), f"duplicate uids in one batch: {uids}"
        assert batch.cursor, "every read returns a cursor"
        if batch.full:
            assert not batch.removed
            self.contacts = {c.uid: c for c in batch.contacts}
        else:
            for uid in batch.removed:
                self.contacts.pop(uid, None)
            self.contacts.update((c.uid, c) for c in batch.contacts)
        self.cursor = batch.cursor
        return batch

    def by_email(self) -> dict[str, Contact]:
        return {c.emails[0]: c for c in self.contacts.values()}

    def names(self) -> dict[str, str]:
        return {c.name: c.title for c in self.contacts.values()}
