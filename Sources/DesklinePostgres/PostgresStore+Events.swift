import DesklineCore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

// The event log and the feed across nodes. The log (`events`) is the truth. A node publishes
// what it committed itself at once; it learns of other nodes' commits from a `NOTIFY` on the
// schema's channel, which is only a doorbell: on every ring, after every reconnect of its
// listening connection, and on a slow poll it reads the log from the last event it published.

extension PostgresStore {
    public func events(in tenant: TenantID, after seq: Int, limit: Int) async throws(DesklineError) -> [TicketEvent] {
        guard limit > 0 else { return [] }
        return try await docs(TicketEvent.self, in: tenant.rawValue, """
            SELECT doc::text FROM \(unescaped: s)events WHERE tenant_id = \(tenant.rawValue) AND seq > \(seq)
            ORDER BY seq LIMIT \(limit)
            """)
    }

    public func lastEventSeq(in tenant: TenantID) async throws(DesklineError) -> Int {
        let s = self.s, logger = self.logger
        return try await transaction(tenant.rawValue, readOnly: true) { connection in
            let rows = try await connection.query("""
                SELECT last_event FROM \(unescaped: s)tenants WHERE tenant_id = \(tenant.rawValue)
                """, logger: logger).collect()
            return try rows.first?.decode(Int.self) ?? 0
        }
    }

    public func followCommittedEvents(_ sink: @escaping CommittedEventSink) -> EventSubscription {
        feed.follow(sink)
    }

    /// Hands `events` (one tenant's consecutive events, in order) to the followers, without
    /// those already handed on: what this node committed and what it read of the others' may
    /// overlap, and each tenant's events go out once, in `seq` order (a gap is the follower's to
    /// fill from the log).
    func publish(_ events: [TicketEvent], of tenant: TenantID) {
        guard !events.isEmpty else { return }
        published.withLock { published in
            let last = published[tenant] ?? 0
            let fresh = events.filter { ($0.seq ?? 0) > last }
            guard let newest = fresh.last?.seq else { return }
            published[tenant] = newest
            feed.publish(fresh)
        }
    }

    // MARK: Several nodes

    /// What makes a node read the log.
    enum Ring: Sendable {
        /// Another node committed `tenant`'s events up to `seq`.
        case tenant(TenantID, Int)
        /// Check every tenant (after a reconnect, and on the slow poll).
        case all
        /// Who follows a ticket (nil: any) from another node changed.
        case follows(TenantID, TicketID)
        case allFollows
    }

    /// Follows the other nodes' commits until cancelled or a graceful shutdown: keeps one
    /// connection listening on the schema's channel (reconnecting by itself), reads the log on
    /// every ring, polls every `pollIntervalMilliseconds`, and prunes events older than
    /// `eventRetentionDays` once an hour. Starts from the events committed so far (a node does
    /// not replay the past).
    public func run() async {
        // A graceful shutdown (SIGTERM in `serve`) ends it like a cancellation: every loop below
        // stops at its next wait.
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                // This node's presence from the start (a LOGIN waits for it to be written).
                group.addTask { await self.runPresence() }
                group.addTask { await self.followLog() }
            }
        }
    }

    /// Reads where the log stands, then follows it (``run()``).
    func followLog() async {
        // Where every tenant's log stands, before any catch-up may run (a tenant this node knows
        // nothing of would be read from its first event): retried until it is read.
        var pause = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                for head in try await heads() {
                    published.withLock { $0[head.tenant] = max($0[head.tenant] ?? 0, head.last) }
                }
                break
            } catch {
                logger.warning("could not read where the event log stands; trying again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(5))
            }
        }
        let (rings, ring) = AsyncStream<Ring>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        await withDiscardingTaskGroup { group in
            group.addTask { await self.listen(ring) }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(self.settings.pollIntervalMilliseconds))
                    ring.yield(.all)
                }
            }
            group.addTask { await self.pruneHourly() }
            group.addTask {
                for await next in rings {
                    await self.read(next)
                }
            }
        }
    }

    /// Listens on the schema's channel with a pooled connection, turning notifications into
    /// rings; reconnects (with a growing pause up to 5 s) when the connection is lost.
    func listen(_ ring: AsyncStream<Ring>.Continuation) async {
        var pause = Duration.milliseconds(100)
        var lost = false
        let channel = self.channel, logger = self.logger, client = self.client
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: channel) { notifications in
                        if lost { logger.notice("listening for other nodes' events again", metadata: ["server": "\(self.settings.serverDescription)"]) }
                        lost = false
                        pause = .milliseconds(100)
                        // Whatever was committed (or followed) while nobody listened.
                        ring.yield(.all)
                        ring.yield(.allFollows)
                        for try await notification in notifications {
                            let parts = notification.payload.split(separator: " ")
                            if parts.first == "follows" {
                                if parts.count == 3, let tenant = TenantID(rawValue: String(parts[1])), let number = Int(parts[2]) {
                                    ring.yield(.follows(tenant, TicketID(number)))
                                } else {
                                    ring.yield(.allFollows)
                                }
                                continue
                            }
                            guard parts.count == 2, let tenant = TenantID(rawValue: String(parts[0])), let seq = Int(parts[1]) else { continue }
                            ring.yield(.tenant(tenant, seq))
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                if !lost {
                    logger.warning("lost the connection that listens for other nodes' events; reconnecting",
                                   metadata: ["server": "\(settings.serverDescription)", "error": "\(error)"])
                }
                lost = true
            }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .seconds(5))
        }
    }

    /// Reads the log for a ring and publishes what this node has not.
    func read(_ ring: Ring) async {
        switch ring {
        case .tenant(let tenant, let seq):
            guard let known = published.withLock({ $0[tenant] }) else {
                // A tenant new to this node: where its history ends is read first.
                await read(.all)
                return
            }
            if seq > known { await catchUp(tenant) }
        case .follows(let tenant, let ticket):
            await readFollowsElsewhere(TicketKey(tenant: tenant, ticket: ticket))
        case .allFollows:
            await readFollowsElsewhere(nil)
        case .all:
            guard let heads = try? await heads() else { return }  // (logged; the next ring or poll tries again)
            for head in heads {
                // A tenant new to this node is followed from where its imported history ends
                // (0 for one made here): history is not pushed as if it happened now.
                let from = published.withLock { published -> Int in
                    if let known = published[head.tenant] { return known }
                    published[head.tenant] = head.history
                    return head.history
                }
                if head.last > from { await catchUp(head.tenant) }
            }
        }
    }

    /// Where a tenant's event log stands: its last event, and the last one that came with an
    /// import (history, never pushed).
    struct Head: Sendable {
        var tenant: TenantID
        var last: Int
        var history: Int
    }

    /// Every tenant's ``Head``, in one read.
    func heads() async throws(DesklineError) -> [Head] {
        let s = self.s, logger = self.logger
        return try await transaction("*", readOnly: true) { connection in
            var heads: [Head] = []
            for try await (tenant, last, history) in try await connection.query(
                "SELECT tenant_id, last_event, history_until FROM \(unescaped: s)tenants", logger: logger).decode((String, Int, Int).self) {
                heads.append(Head(tenant: TenantID(unchecked: tenant), last: last, history: history))
            }
            return heads
        }
    }

    /// Publishes the tenant's events after the last one published, a page at a time.
    func catchUp(_ tenant: TenantID) async {
        while !Task.isCancelled {
            let after = published.withLock { $0[tenant] } ?? 0
            guard let page = try? await events(in: tenant, after: after, limit: EventFollower.catchUpPage), !page.isEmpty else { return }
            publish(page, of: tenant)
            if page.count < EventFollower.catchUpPage { return }
        }
    }

    /// Deletes events older than the retention, now and every hour.
    func pruneHourly() async {
        while !Task.isCancelled {
            do {
                let pruned = try await pruneEvents()
                if pruned > 0 { logger.info("pruned old events from the event log", metadata: ["events": "\(pruned)"]) }
            } catch {
                // (Logged by the transaction.)
            }
            try? await Task.sleep(for: .seconds(3600))
        }
    }

    /// Deletes every tenant's events older than `eventRetentionDays`; returns how many. What is
    /// kept of a tenant's log stays a run without gaps: its events from the first one decided
    /// after the cutoff (`at` is when a change was decided, which two writers on two nodes may
    /// commit in the other order, so a cut by time alone could leave holes).
    @discardableResult
    public func pruneEvents(now: Date = Date()) async throws(DesklineError) -> Int {
        let s = self.s, logger = self.logger
        let cutoff = now.addingTimeInterval(-Double(settings.eventRetentionDays) * 86_400)
        var pruned = 0
        for head in try await heads() {
            let (tenant, last) = (head.tenant, head.last)
            pruned += try await transaction(tenant.rawValue) { connection in
                let rows = try await connection.query(Self.pruneQuery(s, tenant.rawValue, last: last, cutoff: cutoff), logger: logger).collect()
                return try rows.first?.decode(Int.self) ?? 0
            }
        }
        return pruned
    }

    /// One tenant's pruning (also EXPLAINed by a test).
    public static func pruneQuery(_ s: String, _ tenant: String, last: Int, cutoff: Date) -> PostgresQuery {
        """
        WITH gone AS (DELETE FROM \(unescaped: s)events WHERE tenant_id = \(tenant) AND seq <
            coalesce((SELECT min(seq) FROM \(unescaped: s)events WHERE tenant_id = \(tenant) AND at >= \(cutoff)), \(last + 1))
            RETURNING 1)
        SELECT count(*)::bigint FROM gone
        """
    }
}
