import DesklineCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

// What the nodes of one schema share beyond the data (docs/STORAGE.md, "Presence and failed
// logins"): who is logged in where, who is away, and the failed logins.
//
// - Each node has a row in `nodes` with a heartbeat (`seen_at`, the database's clock); a node not
//   seen for `nodeTimeout` no longer counts, and one not seen for `nodeForgetAfter` is deleted
//   with its rows (a node killed with SIGKILL leaves nothing behind for long).
// - Each node writes its own sessions per user to `presence` (one row per node and user) from a
//   single writer task that always writes the latest count (``report(_:in:sessions:)`` marks the
//   user; order cannot be lost); readers add the live nodes' rows to this node's own counts.
// - An away message is one row per user (`away`), cleared when the user's last session on any
//   live node ends (and, should a node have died with it, at the user's next first session).
// - Failed logins are rows (`login_failures`) counted within each rule's window by the database's
//   clock, so every node sees the same counts and the same time.

extension PostgresStore: SharedNodeState, PresenceDirectory {
    /// How often a node's heartbeat is written.
    static let heartbeat = Duration.seconds(5)
    /// A node whose heartbeat is older no longer counts as present.
    static let nodeTimeoutSeconds = 15
    /// A node whose heartbeat is older is deleted, with its presence rows.
    static let nodeForgetAfterSeconds = 60

    struct PresenceKey: Hashable {
        var tenant: TenantID
        var user: UserID
    }

    struct FollowKey: Hashable {
        var tenant: TenantID
        var ticket: TicketID
        var user: UserID
    }

    struct TicketKey: Hashable {
        var tenant: TenantID
        var ticket: TicketID
    }

    /// This node's sessions per user, and what of them is not yet written.
    struct NodeState {
        var counts: [PresenceKey: Int] = [:]
        var dirty: Set<PresenceKey> = []
        /// Users whose sessions here dropped to 0 since the last write (they may be back already:
        /// their last session on every node may still have ended meanwhile).
        var droppedToZero: Set<PresenceKey> = []
        /// The counts as last written (what the other nodes see of this one).
        var writtenCounts: [PresenceKey: Int] = [:]
        /// Rewrite every row of this node (it was forgotten, or a write failed).
        var rewriteAll = false
        /// Reports made, and reports written (or given up on).
        var reported = 0
        var written = 0
        var waiters: [(upTo: Int, resume: CheckedContinuation<Void, Never>)] = []
        /// ``runPresence()`` is running: someone writes, so ``published()`` may wait.
        var writing = false
        /// The longest window of a login rule (failed logins older than it are deleted).
        var longestLoginWindowSeconds = 3600.0
        /// The tickets this node's staff follow, and which of them changed since the last write.
        var follows: Set<FollowKey> = []
        var followsDirty: Set<FollowKey> = []
        /// Who follows each ticket from the other (live) nodes, as last read.
        var elsewhere: [TicketKey: Set<UserID>] = [:]
        var followersChanged: (@Sendable (TenantID, TicketID) -> Void)?
    }

    public var sharedNodeState: (any SharedNodeState)? { self }

    public var presence: any PresenceDirectory { self }

    public func loginLimiter(perAddress: LoginThrottle.Rule, perAccount: LoginThrottle.Rule) -> any LoginLimiter {
        let longest = max(perAddress.window.inSeconds, perAccount.window.inSeconds)
        nodeState.withLock { $0.longestLoginWindowSeconds = max($0.longestLoginWindowSeconds, longest) }
        return PostgresLoginLimiter(store: self, perAddress: perAddress, perAccount: perAccount)
    }

    // MARK: Presence

    public func report(_ user: UserID, in tenant: TenantID, sessions: Int) {
        nodeState.withLock { state in
            let key = PresenceKey(tenant: tenant, user: user)
            state.counts[key] = sessions > 0 ? sessions : nil
            state.dirty.insert(key)
            if sessions == 0 { state.droppedToZero.insert(key) }
            state.reported += 1
        }
        presenceWake.yield()
    }

    public func reportFollowing(_ user: UserID, _ ticket: TicketID, in tenant: TenantID, _ following: Bool) {
        nodeState.withLock { state in
            let key = FollowKey(tenant: tenant, ticket: ticket, user: user)
            if following { state.follows.insert(key) } else { state.follows.remove(key) }
            state.followsDirty.insert(key)
        }
        presenceWake.yield()
    }

    public func followersElsewhere(of ticket: TicketID, in tenant: TenantID) -> Set<UserID> {
        nodeState.withLock { $0.elsewhere[TicketKey(tenant: tenant, ticket: ticket)] ?? [] }
    }

    public func whenFollowersChange(_ handler: @escaping @Sendable (TenantID, TicketID) -> Void) {
        nodeState.withLock { $0.followersChanged = handler }
    }

    /// Reads who follows `ticket` from the other live nodes (nil: every ticket, as after a
    /// reconnect or at a heartbeat), and tells the handler of each ticket whose followers
    /// changed.
    func readFollowsElsewhere(_ ticket: TicketKey?) async {
        let s = self.s, logger = self.logger, node = self.node, timeout = Self.nodeTimeoutSeconds
        let tenant = ticket?.tenant.rawValue ?? "*"
        let number = ticket?.ticket.number ?? 0
        guard let rows = try? await transaction(tenant, readOnly: true, { connection in
            var rows: [(String, Int, String)] = []
            for try await row in try await connection.query("""
                SELECT f.tenant_id, f.ticket, f.user_id FROM \(unescaped: s)follows f JOIN \(unescaped: s)nodes n ON n.node = f.node
                WHERE f.node <> \(node) AND n.seen_at > now() - make_interval(secs => \(timeout))
                  AND (\(number) = 0 OR (f.tenant_id = \(tenant) AND f.ticket = \(number)))
                """, logger: logger).decode((String, Int, String).self) {
                rows.append(row)
            }
            return rows
        }) else { return }  // (Logged; the next ring or heartbeat reads again.)
        var found: [TicketKey: Set<UserID>] = [:]
        for (tenant, number, user) in rows {
            found[TicketKey(tenant: TenantID(unchecked: tenant), ticket: TicketID(number)), default: []].insert(UserID(unchecked: user))
        }
        let (changed, handler) = nodeState.withLock { state -> ([TicketKey], (@Sendable (TenantID, TicketID) -> Void)?) in
            var changed: [TicketKey] = []
            let keys = ticket.map { [$0] } ?? Array(Set(state.elsewhere.keys).union(found.keys))
            for key in keys where (state.elsewhere[key] ?? []) != (found[key] ?? []) {
                changed.append(key)
                state.elsewhere[key] = found[key]
            }
            return (changed, state.followersChanged)
        }
        if let handler { for key in changed { handler(key.tenant, key.ticket) } }
    }

    public func published() async {
        await withCheckedContinuation { (resume: CheckedContinuation<Void, Never>) in
            let now = nodeState.withLock { state -> Bool in
                guard state.writing, state.written < state.reported else { return true }
                state.waiters.append((state.reported, resume))
                return false
            }
            if now { resume.resume() }
        }
    }

    public func setAway(_ reason: String?, for user: UserID, in tenant: TenantID) async throws(DesklineError) {
        let s = self.s, logger = self.logger
        try await transaction(tenant.rawValue) { connection in
            if let reason {
                try await connection.run("""
                    INSERT INTO \(unescaped: s)away (tenant_id, user_id, reason) VALUES (\(tenant.rawValue), \(user.rawValue), \(reason))
                    ON CONFLICT (tenant_id, user_id) DO UPDATE SET reason = excluded.reason
                    """, logger: logger)
            } else {
                try await connection.run(
                    "DELETE FROM \(unescaped: s)away WHERE tenant_id = \(tenant.rawValue) AND user_id = \(user.rawValue)", logger: logger)
            }
        }
    }

    public func presence(in tenant: TenantID) async throws(DesklineError) -> [UserID: UserPresence] {
        let s = self.s, logger = self.logger, node = self.node, timeout = Self.nodeTimeoutSeconds
        let (remote, away) = try await transaction(tenant.rawValue, readOnly: true) { connection in
            var remote: [String: Int] = [:]
            for try await (user, sessions) in try await connection.query("""
                SELECT p.user_id, sum(p.sessions)::bigint FROM \(unescaped: s)presence p
                JOIN \(unescaped: s)nodes n ON n.node = p.node
                WHERE p.tenant_id = \(tenant.rawValue) AND p.node <> \(node) AND n.seen_at > now() - make_interval(secs => \(timeout))
                GROUP BY p.user_id
                """, logger: logger).decode((String, Int).self) {
                remote[user] = sessions
            }
            var away: [String: String] = [:]
            for try await (user, reason) in try await connection.query(
                "SELECT user_id, reason FROM \(unescaped: s)away WHERE tenant_id = \(tenant.rawValue)", logger: logger
            ).decode((String, String).self) {
                away[user] = reason
            }
            return (remote, away)
        }
        // This node's own sessions as they are now, not as last written.
        var found: [UserID: UserPresence] = [:]
        for (user, sessions) in remote { found[UserID(unchecked: user), default: UserPresence(sessions: 0)].sessions += sessions }
        nodeState.withLock { state in
            for (key, sessions) in state.counts where key.tenant == tenant { found[key.user, default: UserPresence(sessions: 0)].sessions += sessions }
        }
        for (user, reason) in away {
            found[UserID(unchecked: user)]?.away = reason
        }
        return found
    }

    /// Writes this node's presence (each change as soon as it is reported, every row again after
    /// a failure or when the node was forgotten) and its heartbeat, and deletes what dead nodes
    /// left, until cancelled.
    func runPresence() async {
        nodeState.withLock { $0.writing = true }
        await withDiscardingTaskGroup { group in
            group.addTask {
                var pause = Duration.milliseconds(100)
                for await _ in self.presenceWakes {
                    if await self.writePresence() {
                        pause = .milliseconds(100)
                    } else {
                        try? await Task.sleep(for: pause)
                        pause = min(pause * 2, .seconds(5))
                        self.presenceWake.yield()
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    await self.beat()
                    try? await Task.sleep(for: Self.heartbeat)
                }
                self.presenceWake.finish()
            }
        }
        let waiters = nodeState.withLock { state in
            defer {
                state.writing = false
                state.waiters = []
            }
            return state.waiters
        }
        for waiter in waiters { waiter.resume.resume() }
        await leave()
    }

    /// A node that stops takes its rows with it, so that its users stop counting at once rather
    /// than after ``nodeTimeoutSeconds``. (Runs while the node is being cancelled: the
    /// transaction's work is a task of its own; a failure is logged, and the heartbeat of the
    /// others deletes the rows later.)
    func leave() async {
        let s = self.s, logger = self.logger, node = self.node
        let channel = self.channel
        _ = try? await transaction("*", until: .now + .seconds(2)) { connection in
            try await connection.run("DELETE FROM \(unescaped: s)presence WHERE node = \(node)", logger: logger)
            try await connection.run("DELETE FROM \(unescaped: s)follows WHERE node = \(node)", logger: logger)
            try await connection.run("DELETE FROM \(unescaped: s)nodes WHERE node = \(node)", logger: logger)
            try await connection.run("SELECT pg_notify(\(channel), 'follows')", logger: logger)
        }
    }

    /// Marks this node alive (the database's clock); true if it had been forgotten (or never
    /// written), so its presence rows must be written again.
    static func touch(_ node: String, _ connection: PostgresConnection, _ s: String, _ logger: Logger) async throws -> Bool {
        let rows = try await connection.query("""
            INSERT INTO \(unescaped: s)nodes (node) VALUES (\(node))
            ON CONFLICT (node) DO UPDATE SET seen_at = now() RETURNING (xmax = 0)
            """, logger: logger).collect()
        return try rows.first?.decode(Bool.self) ?? true
    }

    /// The heartbeat: marks this node alive and deletes nodes not seen for a minute, their
    /// presence rows, and failed logins older than every rule's window.
    func beat() async {
        let s = self.s, logger = self.logger, node = self.node
        let forget = Self.nodeForgetAfterSeconds
        let window = nodeState.withLock { $0.longestLoginWindowSeconds }
        do {
            let forgotten = try await transaction("*") { connection in
                let forgotten = try await Self.touch(node, connection, s, logger)
                try await connection.run("DELETE FROM \(unescaped: s)nodes WHERE seen_at < now() - make_interval(secs => \(forget))", logger: logger)
                for table in ["presence", "follows"] {
                    try await connection.run("""
                        DELETE FROM \(unescaped: s + table) p WHERE NOT EXISTS (SELECT 1 FROM \(unescaped: s)nodes n WHERE n.node = p.node)
                        """, logger: logger)
                }
                try await connection.run("DELETE FROM \(unescaped: s)login_failures WHERE at < now() - make_interval(secs => \(window))", logger: logger)
                return forgotten
            }
            if forgotten {
                let had = nodeState.withLock { state in
                    state.rewriteAll = true
                    return !state.counts.isEmpty
                }
                if had { logger.notice("this node was forgotten by the others (no heartbeat for a while); writing its presence again") }
                presenceWake.yield()
            }
        } catch {
            // (Logged by the transaction; the next beat tries again.)
        }
        // Followers on nodes that stopped or died go (a ring about them may have been missed).
        await readFollowsElsewhere(nil)
    }

    /// Writes what changed since the last write (every row of this node after a failure, or if
    /// the other nodes forgot it) in one transaction, across tenants; false if it failed (what it
    /// held is written again on the next try).
    func writePresence() async -> Bool {
        let (dirty, dropped, counts, written, rewrite, upTo) = nodeState.withLock { state in
            defer {
                state.dirty = []
                state.droppedToZero = []
                state.rewriteAll = false
            }
            return (state.dirty, state.droppedToZero, state.counts, state.writtenCounts, state.rewriteAll, state.reported)
        }
        let (follows, followsDirty) = nodeState.withLock { state in
            defer { state.followsDirty = [] }
            return (state.follows, state.followsDirty)
        }
        let channel = self.channel
        let s = self.s, logger = self.logger, node = self.node, timeout = Self.nodeTimeoutSeconds
        let ok: Bool
        var rewrote = false
        do {
            rewrote = try await transaction("*") { connection in
                let forgotten = try await Self.touch(node, connection, s, logger)
                var keys = dirty
                var followKeys = followsDirty
                if rewrite || forgotten {
                    // (Rows of users who logged out meanwhile go too.)
                    try await connection.run("DELETE FROM \(unescaped: s)presence WHERE node = \(node)", logger: logger)
                    try await connection.run("DELETE FROM \(unescaped: s)follows WHERE node = \(node)", logger: logger)
                    keys.formUnion(counts.keys)
                    followKeys.formUnion(follows)
                }
                for key in followKeys {
                    let (tenant, ticket, user) = (key.tenant.rawValue, key.ticket.number, key.user.rawValue)
                    if follows.contains(key) {
                        try await connection.run("""
                            INSERT INTO \(unescaped: s)follows (tenant_id, ticket, user_id, node) VALUES (\(tenant), \(ticket), \(user), \(node))
                            ON CONFLICT DO NOTHING
                            """, logger: logger)
                    } else {
                        try await connection.run("""
                            DELETE FROM \(unescaped: s)follows WHERE tenant_id = \(tenant) AND ticket = \(ticket) AND user_id = \(user) AND node = \(node)
                            """, logger: logger)
                    }
                }
                // The other nodes read the tickets whose followers changed (a doorbell like the
                // event log's: a ring they miss is made up for at their next heartbeat).
                for ticket in Set(followKeys.map { TicketKey(tenant: $0.tenant, ticket: $0.ticket) }) {
                    try await connection.run("SELECT pg_notify(\(channel), \("follows \(ticket.tenant.rawValue) \(ticket.ticket.number)"))",
                                             logger: logger)
                }
                for key in keys {
                    let (tenant, user) = (key.tenant.rawValue, key.user.rawValue)
                    let sessions = counts[key] ?? 0
                    if sessions > 0 {
                        try await connection.run("""
                            INSERT INTO \(unescaped: s)presence (tenant_id, user_id, node, sessions) VALUES (\(tenant), \(user), \(node), \(sessions))
                            ON CONFLICT (tenant_id, user_id, node) DO UPDATE SET sessions = excluded.sessions
                            """, logger: logger)
                    } else {
                        try await connection.run("""
                            DELETE FROM \(unescaped: s)presence WHERE tenant_id = \(tenant) AND user_id = \(user) AND node = \(node)
                            """, logger: logger)
                    }
                    // Only a change of the user's sessions here counts: their count dropped to 0
                    // (and may be back), or their first session here began. (Rows written again
                    // after a failure or for a forgotten node change nothing.)
                    let first = dropped.contains(key) || (sessions > 0 && (written[key] ?? 0) == 0)
                    // The user's last session ended, or their first began, on every live node:
                    // an away message left over goes.
                    guard first else { continue }
                    try await connection.run("""
                        DELETE FROM \(unescaped: s)away a WHERE a.tenant_id = \(tenant) AND a.user_id = \(user)
                        AND NOT EXISTS (SELECT 1 FROM \(unescaped: s)presence p JOIN \(unescaped: s)nodes n ON n.node = p.node
                                        WHERE p.tenant_id = a.tenant_id AND p.user_id = a.user_id AND p.node <> \(node)
                                          AND n.seen_at > now() - make_interval(secs => \(timeout)))
                        """, logger: logger)
                }
                return rewrite || forgotten
            }
            ok = true
        } catch {
            ok = false
        }
        // What was not written is written again (with the counts as they are then); the callers
        // waiting go on either way.
        let ready = nodeState.withLock { state -> [CheckedContinuation<Void, Never>] in
            if ok && rewrote {
                state.writtenCounts = counts
            } else if ok {
                for key in dirty { state.writtenCounts[key] = counts[key] }
            } else {
                state.dirty.formUnion(dirty)
                state.droppedToZero.formUnion(dropped)
                state.followsDirty.formUnion(followsDirty)
                state.rewriteAll = state.rewriteAll || rewrite
            }
            state.written = max(state.written, upTo)
            let ready = state.waiters.filter { $0.upTo <= state.written }.map(\.resume)
            state.waiters.removeAll { $0.upTo <= state.written }
            return ready
        }
        for resume in ready { resume.resume() }
        return ok
    }
}

/// Failed logins counted in the `login_failures` table, by the database's clock: the same counts
/// on every node.
struct PostgresLoginLimiter: LoginLimiter {
    let store: PostgresStore
    let perAddress: LoginThrottle.Rule
    let perAccount: LoginThrottle.Rule

    static func addressKey(_ address: String) -> String { "address \(address)" }
    static func accountKey(_ account: String) -> String { "account \(account)" }

    func retryAfter(address: String, account: String) async throws(DesklineError) -> Duration? {
        let s = store.s, logger = store.logger
        let (a, aw, u, uw) = (Self.addressKey(address), perAddress.window.inSeconds,
                              Self.accountKey(account), perAccount.window.inSeconds)
        typealias Counts = (Int, Double?, Int, Double?)
        let (addressCount, addressWait, accountCount, accountWait) = try await store.transaction("*", readOnly: true) { connection -> Counts in
            let rows = try await connection.query("""
                SELECT count(*) FILTER (WHERE key = \(a) AND at > now() - make_interval(secs => \(aw))),
                       extract(epoch FROM min(at) FILTER (WHERE key = \(a) AND at > now() - make_interval(secs => \(aw)))
                                          + make_interval(secs => \(aw)) - now())::float8,
                       count(*) FILTER (WHERE key = \(u) AND at > now() - make_interval(secs => \(uw))),
                       extract(epoch FROM min(at) FILTER (WHERE key = \(u) AND at > now() - make_interval(secs => \(uw)))
                                          + make_interval(secs => \(uw)) - now())::float8
                FROM \(unescaped: s)login_failures WHERE key IN (\(a), \(u))
                """, logger: logger).collect()
            guard let row = rows.first else { return (0, nil, 0, nil) }
            return try row.decode(Counts.self)
        }
        var wait: Double?
        if addressCount >= perAddress.limit, let w = addressWait { wait = max(wait ?? 0, w) }
        if accountCount >= perAccount.limit, let w = accountWait { wait = max(wait ?? 0, w) }
        return wait.map { .milliseconds(Int64(max(0, $0) * 1000)) }
    }

    func failed(address: String, account: String) async {
        let s = store.s, logger = store.logger
        let (a, u) = (Self.addressKey(address), Self.accountKey(account))
        _ = try? await store.transaction("*") { connection in
            try await connection.run("INSERT INTO \(unescaped: s)login_failures (key) VALUES (\(a)), (\(u))", logger: logger)
        }
    }

    func succeeded(account: String) async {
        let s = store.s, logger = store.logger
        let u = Self.accountKey(account)
        _ = try? await store.transaction("*") { connection in
            try await connection.run("DELETE FROM \(unescaped: s)login_failures WHERE key = \(u)", logger: logger)
        }
    }
}
