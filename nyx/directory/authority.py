"""The authority's core: signed statements and health in, the next signed document out.

Sans-I/O: `accept(body, now)` takes a node's signed statement (statements.py), `issue(now)` builds
and signs the next document when one is due, `served()` is what the service hands out. The HTTP
service (service.py) and storage (store.py) are shells around it.

When a document is issued:
- at once (at most every `min_interval_s`) when the set of nodes in it would change: a node
  registered, changed its record (a mix publishing its next epoch's key), drained, or went down;
- otherwise every `period_s`, so that documents never run out of validity while nodes are stable.

Document epochs are a counter that only grows, also across restarts (the store keeps the last
one): clients refuse an older epoch than they hold, so an authority that restarted at epoch 1
would be refused by everyone until it caught up.

Several authorities (k of n): each signs the exact bytes of a document. Here one authority builds
the document and the others add their signatures (`add_signature`, `python -m nyx.directory cosign`)
after checking it against their own view; the service serves the newest document that carries
`threshold` valid signatures from the configured authority keys. How n authorities agree on one
document (Tor's vote-and-consensus) is not built: see docs/directory.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nyx.directory.document import DocumentBody, SignedDocument, TrustPolicy, encode_body, sign_body
from nyx.directory.health import HealthTracker
from nyx.directory.records import DirectoryError, NodeRecord
from nyx.directory.statements import Statement, StatementError, check_statement, parse_statement


@dataclass(frozen=True, slots=True)
class AuthoritySettings:
    period_s: float = 60.0  # a fresh document at least this often
    validity_s: float = 300.0  # how long a client may use a document
    min_interval_s: float = 1.0  # at most one document per this interval
    max_statement_age_s: float = 300.0
    heartbeat_interval_s: float = 10.0
    threshold: int = 1
    extra_authorities: frozenset[bytes] = frozenset()  # co-signers' Ed25519 public keys

    def __post_init__(self) -> None:
        if not 0 < self.min_interval_s <= self.period_s < self.validity_s:
            raise DirectoryError("need 0 < min_interval_s <= period_s < validity_s")
        if self.threshold < 1:
            raise DirectoryError("threshold: at least 1")


@dataclass(slots=True)
class Registration:
    record: NodeRecord
    certificate_der: bytes
    last_issued_at_ms: int


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class Authority:
    """One directory authority: registrations, health, and the documents it has signed."""

    def __init__(
        self,
        signing_key: Ed25519PrivateKey,
        settings: AuthoritySettings | None = None,
        registrations: dict[str, Registration] | None = None,
        last_epoch: int = 0,
    ) -> None:
        self.settings = settings or AuthoritySettings()
        self._key = signing_key
        self.public_key = public_bytes(signing_key.public_key())
        self.policy = TrustPolicy(
            frozenset({self.public_key}) | self.settings.extra_authorities, self.settings.threshold
        )
        if self.settings.threshold > len(self.policy.authorities):
            raise DirectoryError(
                f"threshold {self.settings.threshold} but only {len(self.policy.authorities)} authority keys"
            )
        self.health = HealthTracker(heartbeat_interval_s=self.settings.heartbeat_interval_s)
        self.registrations: dict[str, Registration] = dict(registrations or {})
        self.last_epoch = last_epoch
        self._documents: dict[int, SignedDocument] = {}
        self._issued_nodes: dict[int, int] = {}
        self._served: SignedDocument | None = None
        self._served_epoch = 0
        self.served_nodes = 0  # records in the served document (for /metrics)
        self._last_issue = float("-inf")
        # What the last document was made of: the ids listed and the count of record changes then.
        self._listed: tuple[frozenset[str], int] = (frozenset(), 0)
        self._record_changes = 0  # registrations whose record changed (a new key, a new address)
        self.refused: dict[str, int] = {}  # reason -> count, for /metrics

    # --- statements ------------------------------------------------------------------------

    def accept(self, body: bytes, now: float, kind: str | None = None) -> Statement:
        """Check and apply one signed statement (of `kind`, if given: the endpoint it was posted
        to); raises StatementError (the caller answers 4xx) and then changes nothing."""
        try:
            parsed = parse_statement(body)
            claimed = parsed[0]
            if kind is not None and claimed.kind != kind:
                raise StatementError(f"a {claimed.kind} statement posted as {kind}")
            registered = self.registrations.get(claimed.node_id)
            statement = check_statement(
                parsed, now, registered.certificate_der if registered else None, self.settings.max_statement_age_s
            )
            if registered is not None and statement.issued_at_ms <= registered.last_issued_at_ms:
                raise StatementError(
                    f"{statement.node_id}: statement issued at {statement.issued_at_ms} ms is not newer than "
                    f"the last one accepted ({registered.last_issued_at_ms} ms): a replay, or a clock gone back",
                    "replay",
                )
        except StatementError as exc:
            self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
            raise
        if statement.kind == "register":
            assert statement.record is not None and statement.certificate_der is not None
            if registered is None or registered.record != statement.record:
                self._record_changes += 1
            self.registrations[statement.node_id] = Registration(
                statement.record, statement.certificate_der, statement.issued_at_ms
            )
            self.health.heartbeat(statement.node_id, now)
            return statement
        registration = self.registrations[statement.node_id]
        registration.last_issued_at_ms = statement.issued_at_ms
        if statement.kind == "heartbeat":
            self.health.heartbeat(statement.node_id, now)
        elif statement.kind == "drain":
            self.health.drain(statement.node_id, now)
        elif statement.kind == "report":
            assert statement.subject is not None
            self.health.report_loop_failure(statement.node_id, statement.subject, now)
        return statement

    def probe(self, node_id: str, ok: bool, now: float) -> None:
        """A probe's result (the service may probe nodes' addresses)."""
        if node_id in self.registrations:
            self.health.probe(node_id, ok, now)

    def remove(self, node_id: str) -> bool:
        """An operator's removal (e.g. to let a node register a new certificate)."""
        self.health.forget(node_id)
        self._record_changes += 1
        return self.registrations.pop(node_id, None) is not None

    # --- documents -------------------------------------------------------------------------

    def listed(self, now: float) -> list[NodeRecord]:
        """The records the next document would list: registered nodes that are up."""
        up = self.health.up(now)
        return sorted((r.record for n, r in self.registrations.items() if n in up), key=lambda r: r.node_id)

    def due(self, now: float) -> bool:
        if now - self._last_issue < self.settings.min_interval_s:
            return False
        if now - self._last_issue >= self.settings.period_s:
            return True
        return self._composition(now) != self._listed

    def next_deadline(self, now: float) -> float:
        """When `due` may next turn true without a statement arriving (health expiry is polled)."""
        return min(self._last_issue + self.settings.period_s, now + self.settings.min_interval_s)

    def _composition(self, now: float) -> tuple[frozenset[str], int]:
        """What a document issued now would be made of, cheaply: due() asks every tick."""
        return frozenset(self.health.up(now) & self.registrations.keys()), self._record_changes

    def issue(self, now: float) -> SignedDocument:
        """Build, sign and keep the next document (epoch + 1) from the nodes that are up now."""
        records = self.listed(now)
        body = DocumentBody(
            epoch=self.last_epoch + 1,
            valid_after=int(now),
            valid_until=int(now + self.settings.validity_s),
            nodes=tuple(records),
        )
        raw = encode_body(body)
        document = SignedDocument(raw, (sign_body(raw, self._key),))
        self.last_epoch = body.epoch
        self._last_issue = now
        self._listed = self._composition(now)
        self._issued_nodes[body.epoch] = len(records)
        self._documents[body.epoch] = document
        self._prune()
        self._update_served(document, body.epoch)
        return document

    def adopt(self, epoch: int, document: SignedDocument) -> None:
        """Keep a document issued before a restart (from the store), so that it is served until the
        next one and co-signatures for it are still accepted."""
        self._documents[epoch] = document
        self._update_served(document, epoch)

    def document(self, epoch: int) -> SignedDocument | None:
        return self._documents.get(epoch)

    def add_signature(self, epoch: int, authority: bytes, signature: bytes, now: float) -> SignedDocument:
        """A co-signer's signature over document `epoch`; refused unless it verifies and the key is
        one of the configured authorities."""
        document = self._documents.get(epoch)
        if document is None:
            raise DirectoryError(f"no document for epoch {epoch} here (this authority keeps the last few)")
        if authority not in self.policy.authorities:
            raise DirectoryError("that key is not one of this directory's authorities")
        try:
            Ed25519PublicKey.from_public_bytes(authority).verify(signature, document.body_bytes)
        except Exception as exc:  # InvalidSignature, or a malformed key or signature
            raise DirectoryError(f"the signature does not verify over document {epoch}") from exc
        if any(pub == authority for pub, _ in document.signatures):
            return document
        document = document.with_signature(authority, signature)
        self._documents[epoch] = document
        self._update_served(document, epoch)
        return document

    def served(self) -> SignedDocument | None:
        """The newest document with enough valid signatures (None before the first)."""
        return self._served

    @property
    def served_epoch(self) -> int:
        return self._served_epoch

    def _update_served(self, document: SignedDocument, epoch: int) -> None:
        # Every signature here was made or verified by this authority (issue, add_signature, or
        # the store's copy of them), so counting trusted keys is enough; clients verify in full.
        signers = {pub for pub, _ in document.signatures if pub in self.policy.authorities}
        if len(signers) >= self.policy.threshold and epoch >= self._served_epoch:
            self._served = document
            self._served_epoch = epoch
            self.served_nodes = self._issued_nodes.get(epoch, self.served_nodes)

    def _prune(self, keep: int = 8) -> None:
        for epoch in sorted(self._documents)[:-keep]:
            del self._documents[epoch]
            self._issued_nodes.pop(epoch, None)
