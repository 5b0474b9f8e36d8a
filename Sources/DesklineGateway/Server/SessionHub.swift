import DesklineCore
import DesklineProtocol
import NIOCore
import Synchronization

/// The logged-in sessions, and the push side of the gateway: it receives every committed
/// ``TicketEvent`` (``GatewayServices/followEvents(logger:)``) and hands its line to each
/// session allowed and meant to see it.
///
/// Delivery never waits: a line is put on each session's bounded ``Outbox`` (a client that lets
/// it overflow is disconnected) and the lock is never held while anything is written to a socket.
public final class SessionHub: EventDelivery, Sendable {
    /// A class, so that looking one up while publishing costs one reference, not a copy of the
    /// scope's strings and the joined set. Only touched under the `members` lock.
    final class Member {
        let scope: SessionScope
        let outbox: Outbox
        /// An IRC session renders its events itself, on its event loop (nil: native).
        let irc: IRCConnection?
        /// Tickets this (staff) session has JOINed.
        var joined: Set<TicketID> = []
        /// Tickets whose channel this IRC session has open.
        var open: Set<TicketID> = []
        /// The last event this session was considered for (``Members/considering``): a session
        /// reached by several routes (a recipient who also joined the ticket) gets it once.
        var considered = 0

        init(scope: SessionScope, outbox: Outbox, irc: IRCConnection?) {
            self.scope = scope
            self.outbox = outbox
            self.irc = irc
        }
    }

    private struct UserKey: Hashable {
        var tenant: TenantID
        var user: UserID
    }

    private struct TicketKey: Hashable {
        var tenant: TenantID
        var ticket: TicketID
    }

    /// The members, and who to look at for an event: the sessions of each user and the sessions
    /// that joined each ticket. An event's audience comes from these indexes, so delivering it
    /// costs its audience, not the number of sessions on the server. They always agree with the
    /// members (a session is under its own user only, and under a ticket exactly while the
    /// ticket is in its `joined`): the audience is taken from them without asking each member
    /// again.
    private struct Members {
        var all: [Int: Member] = [:]
        var byUser: [UserKey: Set<Int>] = [:]
        var byTicket: [TicketKey: Set<Int>] = [:]
        /// IRC sessions with each ticket's channel open: told when staff start or stop following.
        var ircOpen: [TicketKey: Set<Int>] = [:]
        /// Counts the events whose audience was looked up (see ``Member/considered``).
        var considering = 0
    }

    /// A staff user started or stopped following a ticket (their first session joined it, their
    /// last one left): what the IRC sessions with its channel open show as JOIN or PART.
    enum FollowChange: Sendable {
        case started(UserID, TicketID)
        case stopped(UserID, TicketID)
        /// Who follows the ticket from other nodes changed.
        case elsewhere(TicketID)
    }

    private let members = Mutex(Members())
    /// Who is logged in (here and on the other nodes of a shared store) and who is away: told of
    /// every change of this node's sessions per user, in order.
    let presence: any PresenceDirectory

    /// This process's part of every ``SessionID`` (connections are numbered per process).
    public let node: String

    /// How far each tenant's events were delivered, and the answers waiting for that.
    private struct Delivery {
        /// Events are being followed (between ``startDelivering()`` and ``stopDelivering()``);
        /// otherwise nobody waits.
        var following = false
        var through: [TenantID: Int] = [:]
        var waiting: [TenantID: [(seq: Int, resume: CheckedContinuation<Void, Never>)]] = [:]
    }

    private let delivery = Mutex(Delivery())

    public init(node: String = SessionID.newNode(), presence: any PresenceDirectory = LocalPresence()) {
        self.node = node
        self.presence = presence
        presence.whenFollowersChange { [weak self] tenant, ticket in self?.followersChangedElsewhere(tenant, ticket) }
    }

    /// The IRC sessions with the ticket's channel open are told (they show the difference).
    private func followersChangedElsewhere(_ tenant: TenantID, _ ticket: TicketID) {
        let told = members.withLock { m in
            (m.ircOpen[TicketKey(tenant: tenant, ticket: ticket)] ?? []).compactMap { m.all[$0]?.irc }.map { ($0, FollowChange.elsewhere(ticket)) }
        }
        Self.tell(told)
    }

    /// The id, unique across processes, of this process's connection `session`.
    func sessionID(_ session: Int) -> SessionID { SessionID(node: node, number: session) }

    func attach(_ session: Int, scope: SessionScope, outbox: Outbox, irc: IRCConnection? = nil) {
        members.withLock { m in
            // Once per session: a second attach would leave its first scope in the indexes.
            assert(m.all[session] == nil, "session \(session) attached twice")
            m.all[session] = Member(scope: scope, outbox: outbox, irc: irc)
            let user = UserKey(tenant: scope.tenantId, user: scope.userId)
            m.byUser[user, default: []].insert(session)
            presence.report(scope.userId, in: scope.tenantId, sessions: m.byUser[user]?.count ?? 0)
        }
    }

    func detach(_ session: Int) {
        var told: [(IRCConnection, FollowChange)] = []
        members.withLock { m in
            guard let member = m.all.removeValue(forKey: session) else { return }
            let scope = member.scope
            for ticket in member.open {
                let key = TicketKey(tenant: scope.tenantId, ticket: ticket)
                m.ircOpen[key]?.remove(session)
                if m.ircOpen[key]?.isEmpty == true { m.ircOpen[key] = nil }
            }
            for ticket in member.joined {
                let key = TicketKey(tenant: scope.tenantId, ticket: ticket)
                m.byTicket[key]?.remove(session)
                if m.byTicket[key]?.isEmpty == true { m.byTicket[key] = nil }
                told += followChange(in: m, key, user: scope.userId, startedNow: false)
            }
            let user = UserKey(tenant: scope.tenantId, user: scope.userId)
            m.byUser[user]?.remove(session)
            if m.byUser[user]?.isEmpty ?? true { m.byUser[user] = nil }
            // (With the user's last session, on every node, their away message goes.)
            presence.report(scope.userId, in: scope.tenantId, sessions: m.byUser[user]?.count ?? 0)
        }
        Self.tell(told)
    }

    /// The IRC sessions to tell that `user` started (or stopped) following a ticket, if no other
    /// session of theirs follows it: everyone else with its channel open.
    private func followChange(in m: Members, _ key: TicketKey, user: UserID, startedNow: Bool) -> [(IRCConnection, FollowChange)] {
        // The user's sessions that follow it now, after the change: the first one started, or
        // none is left.
        let following = (m.byTicket[key] ?? []).filter { m.all[$0]?.scope.userId == user }.count
        guard startedNow ? following == 1 : following == 0 else { return [] }
        // (The other nodes learn it too.)
        presence.reportFollowing(user, key.ticket, in: key.tenant, startedNow)
        let change: FollowChange = startedNow ? .started(user, key.ticket) : .stopped(user, key.ticket)
        return (m.ircOpen[key] ?? []).compactMap { id in
            guard let member = m.all[id], member.scope.userId != user, let irc = member.irc else { return nil }
            return (irc, change)
        }
    }

    private static func tell(_ told: [(IRCConnection, FollowChange)]) {
        for (irc, change) in told {
            if irc.eventLoop.inEventLoop { irc.followChanged(change) } else { irc.eventLoop.execute { irc.followChanged(change) } }
        }
    }

    /// An IRC session opened (true) or closed a ticket's channel.
    func setOpen(_ session: Int, _ ticket: TicketID, _ open: Bool) {
        members.withLock { m in
            guard let member = m.all[session] else { return }
            let key = TicketKey(tenant: member.scope.tenantId, ticket: ticket)
            if open {
                member.open.insert(ticket)
                m.ircOpen[key, default: []].insert(session)
            } else {
                member.open.remove(ticket)
                m.ircOpen[key]?.remove(session)
                if m.ircOpen[key]?.isEmpty == true { m.ircOpen[key] = nil }
            }
        }
    }

    /// Sets (or with nil clears) a user's away message, on every node.
    func setAway(_ scope: SessionScope, _ reason: String?) async throws(DesklineError) {
        try await presence.setAway(reason, for: scope.userId, in: scope.tenantId)
    }

    /// Adds (true) or removes (false) a ticket from a session's channels; returns whether that
    /// changed anything.
    func setJoined(_ session: Int, _ ticket: TicketID, _ joined: Bool) -> Bool {
        let (changed, told) = members.withLock { m -> (Bool, [(IRCConnection, FollowChange)]) in
            guard let member = m.all[session] else { return (false, []) }
            let changed = joined ? member.joined.insert(ticket).inserted : member.joined.remove(ticket) != nil
            let key = TicketKey(tenant: member.scope.tenantId, ticket: ticket)
            if joined {
                m.byTicket[key, default: []].insert(session)
            } else {
                m.byTicket[key]?.remove(session)
                if m.byTicket[key]?.isEmpty == true { m.byTicket[key] = nil }
            }
            guard changed else { return (false, []) }
            return (true, followChange(in: m, key, user: member.scope.userId, startedNow: joined))
        }
        Self.tell(told)
        return changed
    }

    /// Whether a session JOINed a ticket.
    func isJoined(_ session: Int, _ ticket: TicketID) -> Bool {
        members.withLock { $0.all[session]?.joined.contains(ticket) ?? false }
    }

    /// The users with a session that JOINed a ticket, on this node and (a store several nodes
    /// share) on the others.
    func followers(of ticket: TicketID, in tenant: TenantID) -> Set<UserID> {
        let here = members.withLock { m in
            Set((m.byTicket[TicketKey(tenant: tenant, ticket: ticket)] ?? []).compactMap { m.all[$0]?.scope.userId })
        }
        return here.union(presence.followersElsewhere(of: ticket, in: tenant))
    }

    /// The tenant's users with a session on any node (with how many, and their away message).
    func presence(in tenant: TenantID) async throws(DesklineError) -> [UserID: UserPresence] {
        try await presence.presence(in: tenant)
    }

    // MARK: Delivery

    /// Events are followed from now on: answers wait for their events (``EventDelivery``).
    func startDelivering() {
        delivery.withLock { $0.following = true }
    }

    /// Events are no longer followed: every waiting answer goes on, and none waits any more.
    func stopDelivering() {
        let waiting = delivery.withLock { d in
            defer {
                d.following = false
                d.waiting = [:]
            }
            return d.waiting.values.flatMap { $0 }
        }
        for waiter in waiting { waiter.resume.resume() }
    }

    /// Returns as a new job on the caller's executor (a session's event loop), behind the lines
    /// the hub already handed to that loop (a push is queued on the loop before its event counts
    /// as delivered). A continuation resumed before its task suspended (already delivered, or
    /// delivered while the waiter was being added) goes on at once, on this thread: so the caller
    /// always queues up again once it may go on.
    public func waitUntilDelivered(_ tenant: TenantID, through seq: Int) async {
        func done(_ d: Delivery) -> Bool { !d.following || d.through[tenant, default: 0] >= seq }
        await withCheckedContinuation { (resume: CheckedContinuation<Void, Never>) in
            let now = delivery.withLock { d -> Bool in
                if done(d) { return true }
                d.waiting[tenant, default: []].append((seq, resume))
                return false
            }
            if now { resume.resume() }
        }
        await Task.yield()
    }

    /// Every event of `tenant` up to `seq` was delivered (or skipped): the answers waiting for
    /// them go on.
    func delivered(_ tenant: TenantID, through seq: Int) {
        let ready = delivery.withLock { d -> [CheckedContinuation<Void, Never>] in
            guard d.through[tenant, default: 0] < seq else { return [] }
            d.through[tenant] = seq
            guard let waiting = d.waiting[tenant] else { return [] }
            let (ready, rest) = (waiting.filter { $0.seq <= seq }, waiting.filter { $0.seq > seq })
            d.waiting[tenant] = rest.isEmpty ? nil : rest
            return ready.map(\.resume)
        }
        for resume in ready { resume.resume() }
    }

    /// Pushes a batch of one tenant's events, in order, then lets the answers that waited for
    /// them go on (their lines were handed to the event loops first, so a session's answer comes
    /// after the pushes before it).
    ///
    /// The audiences of the whole batch are looked up under one lock (sessions logging in or
    /// joining wait for that lookup, not for the rendering); the lines are rendered outside it.
    /// The whole batch goes to each event loop in one hop: a hop per event and loop cost the
    /// writer a queued task each, and the loops a wakeup each, for a batch of many events.
    func publish(_ events: [TicketEvent]) {
        let audiences = members.withLock { m in events.map { audience(of: $0, in: &m) } }
        var pushes = Pushes()
        for (event, audience) in zip(events, audiences) {
            // IRC sessions render an event with their own state (nick, channels, capabilities),
            // on their event loop.
            for group in grouped(audience.irc, by: \.eventLoop) { pushes.add(.irc(event, group), on: group[0].eventLoop) }
            // Rendered once, and only for someone.
            guard !audience.native.isEmpty, let line = NativeDialect.line(for: event) else { continue }
            let buffer = Outbox.encode(line)
            for group in grouped(audience.native, by: \.eventLoop) { pushes.add(.line(buffer, group), on: group[0].eventLoop) }
        }
        pushes.send()
        if let last = events.last, let seq = last.seq { delivered(last.tenantId, through: seq) }
    }

    /// What a batch of events puts on each event loop, in the events' order (so each session
    /// gets its lines in order).
    private struct Pushes {
        enum Item: Sendable {
            /// One line, rendered once, for native sessions.
            case line(ByteBuffer, [Outbox])
            /// An event that IRC sessions render themselves.
            case irc(TicketEvent, [IRCConnection])
        }

        private var loops: [(loop: any EventLoop, items: [Item])] = []

        /// There are few loops (one per core): a linear search.
        mutating func add(_ item: Item, on loop: any EventLoop) {
            if let i = loops.firstIndex(where: { $0.loop === loop }) {
                loops[i].items.append(item)
            } else {
                loops.append((loop, [item]))
            }
        }

        func send() {
            for (loop, items) in loops {
                let deliver: @Sendable () -> Void = {
                    for item in items {
                        switch item {
                        case .line(let buffer, let outboxes):
                            Outbox.write(buffer, to: outboxes)
                        case .irc(let event, let sessions):
                            // A message's channel line is the same for every session with the
                            // same capabilities: rendered once per variant on each loop.
                            var rendered = IRCConnection.RenderedLines()
                            for session in sessions { session.push(event, rendered: &rendered) }
                        }
                    }
                }
                // Always as a job of its own, even on that loop: the store may call from inside
                // its locks (the in-memory store does, on the writing session's loop), and a
                // push can close a connection, which must not run the session's cleanup there.
                loop.execute(deliver)
            }
        }
    }

    /// The sessions an event is pushed to, native and IRC.
    private struct Audience {
        var native: [Outbox] = []
        var irc: [IRCConnection] = []
    }

    /// Who gets an event live: the sessions of the users it notifies, of the ticket's customer
    /// and of its assignee (implicitly joined), and every session that JOINed the ticket —
    /// always within what the session may see at all (never another tenant, never a note to a
    /// customer, never another customer's ticket). Those routes are looked up in the indexes, so
    /// an event costs its audience, not the number of sessions on the server; a session reached
    /// by more than one route gets the event once.
    private func audience(of event: TicketEvent, in m: inout Members) -> Audience {
        var audience = Audience()
        m.considering &+= 1
        let considering = m.considering
        // The session that caused the event got its OK instead. An IRC session has no OK to show
        // a status change by: it gets its own (the topic changes), and its own messages too if it
        // asked for echo-message, in order with the rest.
        let origin = event.originSession?.node == node ? event.originSession?.number : nil
        if let origin, event.kind == .entry, let irc = m.all[origin]?.irc,
           event.entry?.kind == .status || irc.echoes.load(ordering: .relaxed) {
            audience.irc.append(irc)
        }
        func add(_ sessions: Set<Int>?) {
            guard let sessions else { return }
            for id in sessions where id != origin {
                guard let member = m.all[id], member.considered != considering else { continue }
                member.considered = considering
                guard event.mayReach(member.scope) else { continue }
                if let irc = member.irc { audience.irc.append(irc) } else { audience.native.append(member.outbox) }
            }
        }
        func sessions(of user: UserID?) -> Set<Int>? { user.flatMap { m.byUser[UserKey(tenant: event.tenantId, user: $0)] } }
        for user in event.recipients { add(sessions(of: user)) }
        add(sessions(of: event.customerUserId))
        add(sessions(of: event.ticket?.assigneeId))
        if let ticket = event.ticket?.id { add(m.byTicket[TicketKey(tenant: event.tenantId, ticket: ticket)]) }
        return audience
    }
}
