"""The composition root: build every part from :class:`Settings`, start and stop in order.

Start: store → transports → dispatcher → web → SMTP. Stop runs the reverse, so
the SMTP server stops accepting first and the store closes last. Nothing else
in mailgate builds ``Settings`` or wires parts together; two gateways with
different settings can run in one process (the tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import ssl
from contextlib import AsyncExitStack
from datetime import timedelta
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any

import uvicorn

from mailgate.clock import Clock, SystemClock
from mailgate.crypto import SecretBox, load_or_create_key_file
from mailgate.deliver import CaptureTransport, Dispatcher, Transport, parse_relay_url
from mailgate.deliver.admission import RateAdmission
from mailgate.deliver.content import SendTimeContent, sending_account
from mailgate.deliver.pacing import Pacer
from mailgate.deliver.pool import PoolBoard
from mailgate.deliver.router import Router
from mailgate.deliver.ssrf import NetGuard
from mailgate.deliver.transports import transport_for
from mailgate.ids import new_lease_owner
from mailgate.inbox import Inbox
from mailgate.inbox.attachment_files import AttachmentFiles
from mailgate.inbox.release import Release, ReleasePolicy
from mailgate.inbox.sorting import SortBy
from mailgate.ingest.auth_throttle import SharedAuthThrottle
from mailgate.ingest.chaos import Chaos, Stage, configured
from mailgate.ingest.handlers import HandlerPool, HandlerThreads, load_handlers
from mailgate.ingest.smtp import CaptureHandler, SmtpServer
from mailgate.ingest.smtp_data import Spool
from mailgate.ingest.smtp_submission import SubmissionHandler
from mailgate.ingest.submission import Submissions
from mailgate.metrics import Metrics
from mailgate.model import Account, AccountLimits
from mailgate.reports.sync import ReportSync, pause
from mailgate.reports.webhooks import WebhookSender
from mailgate.services import AccountsService, ProbeSettings
from mailgate.services.messages import MessagesService
from mailgate.services.runtime import RuntimeSettings
from mailgate.services.smtp_users import SmtpUsersService
from mailgate.services.webhooks import WebhooksService
from mailgate.settings import TTL_DAYS, FirestoreSettings, Settings, data_dir, default_db_url
from mailgate.store import AccountStore, Database, InboxStore, QueueStore, TokenStore
from mailgate.store.auth_failures import AuthFailureStore
from mailgate.store.ended_sessions import EndedSessionStore
from mailgate.store.outbox import OutboxStore
from mailgate.store.rate_limits import RateLimitStore
from mailgate.store.retention import purge
from mailgate.store.runtime_settings import RuntimeSettingsStore
from mailgate.store.schema import MAX_STORED_MESSAGE
from mailgate.store.smtp_users import SmtpUserStore
from mailgate.store.webhooks import WebhookStore
from mailgate.ui.live import Pulse
from mailgate.ui.options import SmtpStatus, UiOptions
from mailgate.web.lazy import LazyApp
from mailgate.web.mailpit_options import MailpitOptions
from mailgate.web.probes import MetricsListener, Probes
from mailgate.web.services import Services

if TYPE_CHECKING:
    # FastAPI when the web app is built (mailgate.web.lazy); Firestore's modules when
    # --firestore is on (Google's libraries take a second)
    from fastapi import FastAPI

    from mailgate.sources.firestore.source import FirestoreSource
    from mailgate.sources.firestore.writeback import FirestoreWriteBack

__all__ = ["Gateway", "Mode", "database_url", "format_hostport", "secret_box", "webhook_guard"]

log = logging.getLogger(__name__)


class Mode(StrEnum):
    DEV = "dev"  #: capture server: SMTP capture, every message to the inbox
    SERVE = "serve"  #: gateway: deliver through the relay (capture when none is set)


#: seconds between looks at the settings another process may have changed
RUNTIME_REFRESH = 5.0


class Gateway:
    """One running mailgate. ``async with Gateway(settings, mode=…) as gw:``."""

    def __init__(
        self,
        settings: Settings,
        *,
        mode: Mode,
        clock: Clock | None = None,
        fresh_inbox: bool = False,
    ) -> None:
        self.settings = settings
        self.mode = mode
        self.fresh_inbox = fresh_inbox  #: empty the inbox before listening (``dev --fresh``)
        self.clock = clock or SystemClock()
        self.http_address: tuple[str, int] | None = None
        self.metrics_address: tuple[str, int] | None = None  #: the --metrics listener
        self.smtp_address: tuple[str, int] | None = None
        self.smtps_address: tuple[str, int] | None = None  #: the implicit-TLS listener
        self.db_url = database_url(settings, mode)
        self.inbox: Inbox
        self.pools = PoolBoard()  #: this gateway's SMTP pools, for GET /api/v1/stats
        self.metrics = Metrics(self.pools.snapshot)  #: what /metrics shows
        self._db: Database | None = None
        self._queue: QueueStore | None = None  #: for the queue depth in /metrics
        self._smtp_server: SmtpServer | None = None
        self.accounts: AccountStore  #: the account directory (secrets sealed at rest)
        self.dispatcher: Dispatcher
        self.webhooks: WebhookSender  #: POSTs outbox events to the webhook endpoints
        self.firestore: FirestoreSource | None = None  #: the mail collection, when watched
        self.firestore_writeback: FirestoreWriteBack | None = None
        self.report_sync: ReportSync | None = None  #: POSTs reports to reports.sync_url
        self.router: Router
        self.mailpit: MailpitOptions  #: release, chaos and info of the Mailpit API
        self.ui_pulse = Pulse()  #: wakes the admin UI's live pages when mail moves
        #: the capture server's chaos triggers, set by both chaos routes (issue 10); from
        #: the effective settings (configured, and changed at run time) at start
        self.chaos = Chaos()
        self.runtime: RuntimeSettings  #: settings changed at run time (issue 11)
        self.pacer: Pacer  #: the accounts' rate limits, shared through the store
        self._log_level = logging.getLogger().level  #: the process's, without a change
        self._retention_changed = asyncio.Event()  #: wakes the purge loop early
        self._stack = AsyncExitStack()

    @property
    def http_url(self) -> str:
        assert self.http_address is not None, "gateway not started"
        return f"http://{format_hostport(*self.http_address)}"

    async def __aenter__(self) -> Gateway:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        s = self.settings
        s.check_safe()
        db = self._db = Database(self.db_url)
        self._stack.push_async_callback(db.aclose)
        await db.migrate()
        # the changes made at run time (admin UI, PATCH /api/v1/settings) over the configured
        self.runtime = RuntimeSettings(RuntimeSettingsStore(db), self.clock, s)
        s = self.settings = await self.runtime.load()
        self._set_chaos(s)
        self._stack.callback(logging.getLogger().setLevel, self._log_level)  # as it found it
        queue = self._queue = QueueStore(db)
        boxes = s.inbox.boxes
        inbox_store = InboxStore(
            db,
            max_messages=s.inbox.max_messages,
            box_max_messages={
                name: box.max_messages
                for name, box in boxes.items()
                if box.max_messages is not None
            },
        )
        self.inbox = Inbox(
            inbox_store,
            self.clock,
            files=self._attachment_files(),
            sort_by=SortBy(s.inbox.sort_by),
            code_pattern=s.inbox.code_pattern,
            max_age_days=s.inbox.max_age_days,
            box_max_age_days={name: box.max_age_days for name, box in boxes.items()},
        )
        if self.fresh_inbox:
            await self.inbox.clear(None)
        box = secret_box(s, self.mode)
        self.accounts = AccountStore(db, box, self.clock)
        router, default_from = await self._transports()
        self.router = router
        # limits shared through the database; "slow down" replies halve a rate per process
        pacer = self.pacer = Pacer(RateLimitStore(db), self.clock, burst=s.delivery.pace_burst)
        owner = new_lease_owner()
        log.info("dispatcher lease owner %s is %s pid %d", owner, socket.gethostname(), os.getpid())
        self.dispatcher = Dispatcher(
            queue,
            router,
            retry=s.retry.policy(),
            settings=s.delivery,
            clock=self.clock,
            owner=owner,
            pacer=pacer,
            metrics=self.metrics,
            on_recorded=self._events_written,
            # url/path attachments and DKIM, resolved when each message is sent
            prepare=await self._stack.enter_async_context(
                SendTimeContent(s.attachments, accounts=sending_account(router))
            ),
        )
        if s.delivery.enabled:
            await self.dispatcher.start()
            self._stack.push_async_callback(self.dispatcher.stop)
        if s.retention.enabled:
            purging = asyncio.create_task(self._purge_every(db), name="mailgate-retention")
            self._stack.push_async_callback(_cancel, purging)
        if self.inbox.files is not None:  # smtp.attachment_storage.mode = tempfile
            sweeping = asyncio.create_task(self.inbox.sweep_files(), name="mailgate-attachments")
            self._stack.push_async_callback(_cancel, sweeping)
        submissions = Submissions(
            queue,
            self.clock,
            default_from=default_from,
            limits=s.limits,
            on_queued=self._queued,
            admission=RateAdmission(router, pacer),
            max_attachment=s.attachments.max_attachment_size,
        )
        webhooks = await self._webhooks(db, box)
        await self._report_sync(db, queue)
        self.firestore = await self._firestore(db, queue, submissions)
        smtp_users = SmtpUsersService(SmtpUserStore(db), self.clock)
        self.mailpit = mailpit_options(
            s, self.mode, self.db_url, submissions, self.clock, router, chaos=self.chaos
        )
        services = Services(
            MessagesService(queue, self.clock, submissions),
            self.inbox,
            s.api_token,
            self.mode.value,
            accounts=self._accounts_service(router),
            tokens=TokenStore(db, self.clock),
            webhooks=webhooks,
            firestore=self.firestore,
            smtp_users=smtp_users,
            chaos=self.chaos,
            runtime=self.runtime,
            admin=(s.admin_user, s.admin_pass) if s.admin_user and s.admin_pass else None,
        )
        self.runtime.apply = self._apply_runtime
        self._apply_runtime(s, self.runtime.log_level)
        refreshing = asyncio.create_task(self._refresh_runtime(), name="mailgate-settings")
        self._stack.push_async_callback(_cancel, refreshing)
        await self._start_web(services)
        # stopping, waits and event streams end before the web server waits for them
        self._stack.callback(self.inbox.events.close)
        self._stack.callback(self.ui_pulse.close)
        if self.smtp_mode == "capture":
            await self._start_smtp(await self._capture_handler())
        elif self.smtp_mode == "submission":
            await self._start_smtp(self._submission_handler(smtp_users, submissions))

    async def _webhooks(self, db: Database, box: SecretBox | None) -> WebhooksService:
        """The endpoints' service, and their sender when this process delivers them."""
        s = self.settings.webhooks
        guard = webhook_guard(self.settings, self.mode)
        store, outbox = WebhookStore(db, box), OutboxStore(db, dead_after=s.dead_after)
        self.webhooks = WebhookSender(
            store, outbox, self.clock, s, guard=guard, on_attempt=self.metrics.webhook_delivery
        )
        if s.enabled:
            await self.webhooks.start()
            self._stack.push_async_callback(self.webhooks.stop)
        return WebhooksService(
            store, outbox, self.clock, guard=guard, on_change=self.webhooks.changed
        )

    def _events_written(self) -> None:
        """Outbox events were written in this process (an outcome, a queued message): the
        webhook sender looks for them now instead of at its next poll."""
        if hasattr(self, "webhooks"):  # built just after the dispatcher started
            self.webhooks.wake()
        self.ui_pulse.poke()

    def _queued(self) -> None:
        """Messages and their ``message.queued`` events were written: send and report."""
        self.dispatcher.wake()
        self._events_written()

    async def _firestore(
        self, db: Database, queue: QueueStore, submissions: Submissions
    ) -> FirestoreSource | None:
        """The ``mail`` collection's watcher and its write-back, when ``--firestore``."""
        s = self.settings.firestore
        if not s.enabled:
            return None
        from mailgate.sources.firestore.clients import clients as firestore_clients
        from mailgate.sources.firestore.contracts import ContractOptions
        from mailgate.sources.firestore.reader import DocumentReader
        from mailgate.sources.firestore.source import FirestoreOptions, FirestoreSource
        from mailgate.sources.firestore.writeback import FirestoreWriteBack, WriteBackOptions

        client, listener = firestore_clients(s)

        async def close() -> None:
            await client._firestore_api.transport.close()  # the grpc.aio channel

        self._stack.push_async_callback(close)
        options = ContractOptions(
            default_from=s.default_from,
            default_reply_to=s.default_reply_to,
            max_retry_count=s.max_retry_count,
            users_collection=s.users_collection,
            templates_collection=s.templates_collection,
        )

        async def cancel(message_id: str, tenant: str) -> None:
            await queue.cancel(message_id, tenant, self.clock.now())

        source = FirestoreSource(
            client,
            listener if s.listen else None,
            DocumentReader(client, options),
            submissions.submit,
            cancel,
            options=FirestoreOptions(
                collection=s.collection,
                contract=s.contract,
                tenant=s.tenant,
                poll_interval=s.poll_interval,
                lease_seconds=s.lease_seconds,
                max_retry_count=s.max_retry_count,
                listen=s.listen,
                sweep_interval=s.sweep_interval,
            ),
            owner=new_lease_owner(),
            now=self.clock.now,
        )
        self.firestore_writeback = FirestoreWriteBack(
            client,
            OutboxStore(db),
            options=WriteBackOptions(lease_seconds=s.lease_seconds, ttl=firestore_ttl(s)),
            now=self.clock.now,
        )
        await self.firestore_writeback.start()
        self._stack.push_async_callback(self.firestore_writeback.stop)
        await source.start()
        self._stack.push_async_callback(source.stop)
        log.info("watching firestore collection %s (contract %s)", s.collection, s.contract)
        return source

    async def _report_sync(self, db: Database, queue: QueueStore) -> None:
        """Delivery reports to ``reports.sync_url`` when set; else its consumer, if one
        was registered before, is paused (:func:`mailgate.reports.sync.pause`)."""
        s = self.settings.reports
        outbox = OutboxStore(db, dead_after=s.dead_after)
        if s.sync_url is None:
            await pause(outbox)
            return
        self.report_sync = ReportSync(
            outbox, queue, self.clock, s, on_sync=self.metrics.report_sync
        )
        await self.report_sync.start()
        self._stack.push_async_callback(self.report_sync.stop)

    async def _transports(self) -> tuple[Router, str]:
        """The router from a message to its transport, and the default sender.

        ``dev`` captures everything (but captured mail released on purpose, which goes
        through the relay when one is set); ``serve`` sends through the configured relay as
        the account ``default`` (capture when there is none).
        """
        capture: Transport = CaptureTransport(self.inbox)
        relay_url = self.settings.relay_url
        if self.mode is Mode.DEV and relay_url is None:
            return Router(capture=capture, capture_only=True), self.settings.default_from
        if relay_url is None:
            return self._router(capture, relay=None), self.settings.default_from
        relay = parse_relay_url(relay_url.get_secret_value())
        account = relay.account(pool_size=self.settings.delivery.pool_size)
        smtp = transport_for(
            account,
            settings=self.settings.delivery,
            local_hostname=self.settings.smtp.hostname,
            board=self.pools,
        )
        self._stack.push_async_callback(smtp.aclose)
        if self.mode is Mode.DEV:
            log.info("captured mail is released through %s", relay.name)
            router = Router(capture=capture, relay=(account, smtp), capture_only=True)
            return router, relay.default_from or self.settings.default_from
        log.info("relaying through %s", relay.name)
        router = self._router(capture, relay=(account, smtp))
        return router, relay.default_from or self.settings.default_from

    def _router(self, capture: Transport, *, relay: tuple[Account, Transport] | None) -> Router:
        """Routes through the account directory: stored accounts get their own transport
        (SMTP pool or Postmark), built on first use and closed with the router."""
        factory = functools.partial(
            transport_for,
            settings=self.settings.delivery,
            local_hostname=self.settings.smtp.hostname,
            postmark=self.settings.postmark,
            board=self.pools,
        )
        router = Router(
            capture=capture,
            accounts=self.accounts,
            factory=factory,
            relay=relay,
            default_pool_size=AccountLimits().pool_size,  # a stored account's default
        )
        self._stack.push_async_callback(router.aclose)
        return router

    def _accounts_service(self, router: Router) -> AccountsService:
        """Accounts for the API and CLI; the relay is listed as ``default`` (read-only)."""
        probe = ProbeSettings(
            timeout=self.settings.delivery.smtp_timeout,
            local_hostname=self.settings.smtp.hostname,
            postmark_url=self.settings.postmark.base_url,
        )
        configured = [router.relay[0]] if router.relay is not None else []
        return AccountsService(
            self.accounts,
            self.clock,
            configured=configured,
            probe_settings=probe,
            on_change=self._account_changed,
        )

    def _account_changed(self, tenant: str, account_id: str) -> None:
        """Drop the account's cached transport; wake the messages waiting for it."""
        self.router.forget(tenant, account_id)
        self.dispatcher.account_changed(tenant, account_id)

    async def _start_web(self, services: Services) -> None:
        """The web app, and the metrics listener's when ``--metrics``: both built on the
        first request under ``dev`` (a capture server most often has none), at start under
        ``serve`` (its first request is not the slow one); mailgate.web.lazy."""
        http, limits, ui = self.settings.http, self.settings.limits, self._ui_options()

        def build() -> FastAPI:  # in a worker thread: imports FastAPI, Jinja2, the routes
            from mailgate.web.app import create_app

            app = create_app(
                services,
                http=http,
                limits=limits,
                pool_stats=self.pools.snapshot,
                metrics=self._scrape,
                readiness=self.readiness,
                mailpit=self.mailpit,
                ui=ui,
            )
            # the OpenAPI schema, which the first request's 405 check reads (web.methods):
            # 0.2 s of CPU, better spent here than on the loop that serves SMTP
            app.openapi()
            return app

        # a probe is answered without the web app while it is not built: from the Hosts
        # its DNS-rebinding check lets in when there is no API token (web.hosts)
        hosts = None if services.api_token else http.allowed_hosts
        probes = Probes(self.mode.value, self.readiness, allowed_hosts=hosts)
        app = LazyApp(build, probes)
        self._stack.push_async_callback(app.aclose)  # if uvicorn never ran its lifespan
        if self.mode is Mode.SERVE:
            await app.load()
        self.http_address = await self._serve_http(app, http.host, http.port, "mailgate-web")
        if http.metrics_port is not None:
            metrics = Probes(self.mode.value, self.readiness, metrics=self._scrape)
            self.metrics_address = await self._serve_http(
                MetricsListener(metrics), http.metrics_host, http.metrics_port, "mailgate-metrics"
            )

    def _ui_options(self) -> UiOptions:
        """The admin UI's credentials and the live figures only the gateway holds."""
        s, db = self.settings, self._db
        assert db is not None

        def smtp() -> SmtpStatus | None:
            server, address = self._smtp_server, self.smtp_address
            if server is None or address is None or self.smtp_mode is None:
                return None
            return SmtpStatus(
                self.smtp_mode, format_hostport(*address), len(server.sessions), server.listening
            )

        return UiOptions(
            admin_user=s.admin_user,
            admin_pass=s.admin_pass,
            secret_key=s.secret_key,
            smtp=smtp,
            outbox=OutboxStore(db).backlogs,
            pulse=self.ui_pulse,
            failures=AuthFailureStore(db),
            ended=EndedSessionStore(db),
        )

    async def _serve_http(self, app: Any, host: str, port: int, name: str) -> tuple[str, int]:
        """Serve ``app`` with uvicorn in this loop until the gateway stops; the address."""
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            # Mailpit's /api/events; the sans-I/O protocol of the websockets library
            # (its legacy one warns on import); pings every 20 s keep the socket alive
            ws="websockets-sansio",
        )
        server = _EmbeddedServer(config)
        sock = _listen(host, port)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=name)
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"{name} stopped during start-up")
            await asyncio.sleep(0.01)

        async def stop() -> None:
            server.should_exit = True
            await task
            sock.close()

        self._stack.push_async_callback(stop)
        address: tuple[str, int] = sock.getsockname()[:2]
        return address

    @property
    def smtp_mode(self) -> str | None:
        """What the SMTP server does here: capture, submission, or None (no server)."""
        s = self.settings.smtp
        if not s.enabled:
            return None
        return s.mode or ("capture" if self.mode is Mode.DEV else None)

    def _submission_handler(
        self, users: SmtpUsersService, submissions: Submissions
    ) -> SubmissionHandler:
        return SubmissionHandler(
            users,
            submissions,
            self.clock,
            hostname=self.settings.smtp.hostname,
            max_recipients=self.settings.smtp.max_recipients,
        )

    async def _capture_handler(self) -> CaptureHandler:
        s = self.settings
        users = None
        if s.smtp.auth == "verify":
            users = {name: secret.get_secret_value() for name, secret in s.smtp.users.items()}
        return CaptureHandler(
            self.inbox,
            max_recipients=s.smtp.max_recipients,
            users=users,
            handlers=await self._capture_handlers(),
            include_raw=s.smtp.include_raw,
        )

    async def _start_smtp(self, handler: CaptureHandler | SubmissionHandler) -> None:
        s = self.settings
        submission = isinstance(handler, SubmissionHandler)
        files = self.inbox.files
        throttle = None
        if submission:  # failed AUTH counted in the store: one limit for every process
            assert self._db is not None
            throttle = SharedAuthThrottle(
                AuthFailureStore(self._db),
                self.clock,
                s.smtp.auth_max_failures,
                s.smtp.auth_failure_window,
            )
            self._stack.push_async_callback(throttle.aclose)  # after the server stops
        server = SmtpServer(
            handler,
            submission=submission,
            throttle=throttle,
            cleartext_auth_from=tuple(s.smtp.cleartext_auth_from),
            hostname=s.smtp.hostname,
            max_message_size=_storable(s.smtp.max_message_size),
            timeout=s.smtp.read_timeout,
            write_timeout=s.smtp.write_timeout,
            metrics=self.metrics,
            tls_context=self._smtp_tls(),
            max_connections=s.smtp.max_connections,
            # chaos is a testing tool: the capture server's only, never real submission
            chaos=None if submission else self.chaos,
            # tempfile mode: big messages go to disk as they arrive, never whole in memory
            spool=None if submission or files is None else Spool(files.spool_dir),
        )
        self.smtp_address = await server.start(s.smtp.host, s.smtp.port)
        self._smtp_server = server
        self._stack.push_async_callback(server.stop, s.smtp.shutdown_grace)
        if s.smtp.tls_port is not None:
            self.smtps_address = await server.start_tls(s.smtp.host, s.smtp.tls_port)
            log.info("SMTP with implicit TLS on %s", format_hostport(*self.smtps_address))

    async def _capture_handlers(self) -> HandlerPool | None:
        """What each captured message is handed to (``smtp.handlers``), if anything."""
        s = self.settings.smtp
        if not s.handlers:
            return None
        import httpx  # only for handlers: webhook URLs POST with it

        client = httpx.AsyncClient(timeout=s.pool.timeout)
        self._stack.push_async_callback(client.aclose)
        threads = HandlerThreads(s.pool.num_workers)
        self._stack.callback(threads.shutdown, wait=False, cancel_futures=True)
        pool = HandlerPool(
            load_handlers(s.handlers, client, threads),
            workers=s.pool.num_workers,
            timeout=s.pool.timeout,
            recorder=self.metrics,
        )
        self._stack.push_async_callback(pool.aclose)  # after the SMTP server has stopped
        return pool

    def _smtp_tls(self) -> ssl.SSLContext | None:
        """The SMTP server's TLS context: the configured certificate, else under ``dev`` a
        self-signed one kept in the data directory; None: ``serve`` without one."""
        from mailgate.ingest.tls import self_signed, server_context

        s = self.settings.smtp
        if s.tls_cert is not None and s.tls_key is not None:
            cert, key = s.tls_cert, s.tls_key
        elif self.mode is Mode.DEV:
            cert, key = self_signed(data_dir() / "tls", s.hostname)
        else:
            log.warning(
                "SMTP offers no TLS (set smtp.tls_cert and smtp.tls_key): AUTH is refused"
                " to clients not on loopback"
            )
            return None
        log.info("SMTP offers STARTTLS with the certificate %s", cert)
        return server_context(cert, key)

    def _attachment_files(self) -> AttachmentFiles | None:
        """Where captured attachments go for the handlers in tempfile mode."""
        s = self.settings.smtp.attachment_storage
        if s.mode != "tempfile":
            return None
        directory = s.temp_dir or data_dir() / "attachments"
        return AttachmentFiles(directory, store_url=self.db_url, cleanup_after=s.cleanup_after)

    async def _purge_every(self, db: Database) -> None:
        """Retention (``store.retention``): at start, then every ``retention.interval``,
        and at once when a retention setting is changed at run time."""
        while True:
            keep = timedelta(days=self.settings.retention.days)
            try:
                purged = await purge(db, self.clock.now() - keep)
                if purged.messages or purged.events:
                    log.info("retention: deleted %d messages and %d events older than %s",
                             purged.messages, purged.events, keep)  # fmt: skip
                for p in await self.inbox.prune():
                    log.info("inbox %s of tenant %s: deleted %d captured messages past its"
                             " max_age_days", p.box, p.tenant, p.count)  # fmt: skip
            except Exception:
                log.exception("retention purge failed; trying again at the next interval")
            self._retention_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.retention.interval):
                    await self._retention_changed.wait()

    def _apply_runtime(self, s: Settings, log_level: str | None) -> None:
        """Put settings changed at run time into the running parts (RuntimeSettings)."""
        before, self.settings = self.settings, s
        logging.getLogger().setLevel(log_level or self._log_level)
        self.dispatcher.retry = s.retry.policy()
        self.pacer.burst = s.delivery.pace_burst
        if self.firestore is not None:
            self.firestore.poll_interval = s.firestore.poll_interval
        self.inbox.store.max_messages = s.inbox.max_messages
        self.inbox.max_age_days = s.inbox.max_age_days
        if s.smtp.chaos != before.smtp.chaos:  # else what PUT /api/v1/chaos set stays
            self._set_chaos(s)
        if (s.retention, s.inbox.max_age_days) != (before.retention, before.inbox.max_age_days):
            self._retention_changed.set()

    def _set_chaos(self, s: Settings) -> None:
        triggers = configured(s.smtp.chaos)
        self.chaos.set({stage: triggers.at(stage) for stage in Stage})

    async def _refresh_runtime(self) -> None:
        """Pick up settings another process changed (they share the database)."""
        while True:
            await asyncio.sleep(RUNTIME_REFRESH)
            try:
                await self.runtime.refresh()
            except Exception:
                log.exception("cannot read the settings changed at run time; trying again")

    async def readiness(self) -> dict[str, str]:
        """Each part that must work for this gateway to take mail: ``ok``, or why not."""
        s = self.settings
        checks: dict[str, str] = {}
        problem = await self._db.check() if self._db is not None else "not opened"
        checks["store"] = problem or "ok"
        if s.delivery.enabled:
            checks["dispatcher"] = "ok" if self.dispatcher.running else "not running"
        if s.webhooks.enabled:
            checks["webhooks"] = "ok" if self.webhooks.running else "not running"
        if self.firestore is not None and self.firestore_writeback is not None:
            running = self.firestore.running and self.firestore_writeback.running
            checks["firestore"] = "ok" if running else "not running"
        if self.report_sync is not None:
            checks["report_sync"] = "ok" if self.report_sync.running else "not running"
        if self.smtp_mode is not None:
            server = self._smtp_server
            checks["smtp"] = "ok" if server is not None and server.listening else "not listening"
        return checks

    async def _scrape(self) -> bytes:
        """The metrics, with the queue depth read from the store now."""
        assert self._db is not None and self._queue is not None
        self.metrics.set_queue_depth(await self._queue.count_by_state())
        self.metrics.set_outbox_backlog(await OutboxStore(self._db).backlogs())
        return self.metrics.exposition()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def database_url(settings: Settings, mode: Mode) -> str:
    """The configured database, or this mode's SQLite file in the user's data dir."""
    return settings.db_url or default_db_url(f"{mode.value}.sqlite3")


def mailpit_options(
    settings: Settings,
    mode: Mode,
    db_url: str,
    submissions: Submissions,
    clock: Clock,
    router: Router,
    *,
    chaos: Chaos | None = None,
) -> MailpitOptions:
    """Release, link-check, chaos and info of the Mailpit API (``/mailpit``): ``dev``
    releases only through a relay; ``serve`` routes released mail as any other. ``chaos``:
    the gateway's triggers (None: ones of its own)."""
    s = settings.inbox
    policy = ReleasePolicy(tuple(s.release_allow), tuple(s.release_deny))
    enabled = mode is Mode.SERVE or router.relay is not None
    release = Release(
        submissions, clock, policy=policy, enabled=enabled, hostname=settings.smtp.hostname
    )
    relay_name = ""
    if settings.relay_url is not None:
        relay_name = parse_relay_url(settings.relay_url.get_secret_value()).name
    path = db_url.removeprefix("sqlite:///") if db_url.startswith("sqlite:///") else ""

    def size() -> int:
        with contextlib.suppress(OSError):
            return os.path.getsize(path) if path else 0
        return 0

    return MailpitOptions(
        release=release,
        relay_name=relay_name,
        label=settings.smtp.hostname,
        database=path or db_url.partition(":")[0],
        database_size=size,
        link_guard=NetGuard(allow_private=s.link_check_private),
        chaos=chaos or Chaos(),
    )


def secret_box(settings: Settings, mode: Mode) -> SecretBox | None:
    """``MAILGATE_SECRET_KEY``; ``dev`` without one makes a key on first start and keeps
    it in the data dir (mode 0600); ``serve`` without one stores no secrets."""
    if settings.secret_key is not None:
        return SecretBox.from_setting(settings.secret_key.get_secret_value())
    if mode is Mode.DEV:
        return SecretBox.from_setting(load_or_create_key_file(data_dir() / "dev-secret.key"))
    return None


def webhook_guard(settings: Settings, mode: Mode) -> NetGuard:
    """Which addresses webhook URLs may reach: private ones too under ``dev`` (a
    developer's receiver is local) unless the settings say otherwise."""
    s = settings.webhooks
    allow_private = s.allow_private_networks
    if allow_private is None:
        allow_private = mode is Mode.DEV
    return NetGuard(allow_private, tuple(s.allowed_hosts))


def firestore_ttl(s: FirestoreSettings) -> timedelta | None:
    """``delivery.expireAt`` after the outcome: the extension's TTL_EXPIRE_TYPE/VALUE."""
    if s.ttl_expire_type == "never":
        return None
    return timedelta(days=TTL_DAYS[s.ttl_expire_type] * s.ttl_expire_value)


def _storable(max_message_size: int) -> int:
    """``smtp.max_message_size`` within what the store keeps (0, no limit of one's own,
    is that); larger is said once, at start-up."""
    if max_message_size > MAX_STORED_MESSAGE:
        log.warning(
            "smtp.max_message_size %d is more than the store keeps: %d is announced",
            max_message_size, MAX_STORED_MESSAGE,
        )  # fmt: skip
    return min(max_message_size or MAX_STORED_MESSAGE, MAX_STORED_MESSAGE)


def format_hostport(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets (RFC 3986 §3.2.2)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: signals belong to the CLI, not to uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose protocol
    # says TCP, and proto 0 made every keep-alive response after the first wait 40 ms
    # for the client's delayed ACK (Nagle held the body behind the headers)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        message = f"web server cannot listen on {format_hostport(host, port)}: {exc.strerror}"
        raise OSError(exc.errno, message) from exc
    return sock
