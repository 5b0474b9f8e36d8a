import struct Foundation.Date
import Logging

/// Tickets and call requests, with the access rules that decide who sees and does what.
///
/// The rules, all in this file:
/// - A customer sees and acts on only the tickets and calls of their own customer record.
/// - Staff (agents, admins) see every ticket of their own tenant.
/// - A ticket that exists but may not be seen is reported exactly like one that does not exist.
/// - Nobody writes in a closed ticket; a customer writing in a resolved ticket reopens it.
/// - Tenant, customer and author always come from the ``SessionScope``.
public struct TicketService: Sendable {
    let store: any Store
    let delivery: (any EventDelivery)?
    let now: @Sendable () -> Date
    let logger: Logger

    /// The service decides every change (``Change``) and the store commits it with its inbox
    /// lines and its event; the event reaches sessions through ``Store/followCommittedEvents(_:)``.
    /// - Parameter delivery: where this process delivers events (the gateway's hub): a change is
    ///   answered once its event was delivered there (see ``EventDelivery``).
    public init(store: any Store, delivery: (any EventDelivery)? = nil, logger: Logger = Logger(label: "deskline.tickets"),
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.delivery = delivery
        self.now = now
        self.logger = logger
    }

    /// Commits are answered in the order their events are pushed: waits until `change`'s event
    /// (and so every earlier one of the tenant) was delivered.
    private func delivered(_ change: Change?) async {
        guard let delivery, let event = change?.event, let seq = event.seq else { return }
        await delivery.waitUntilDelivered(event.tenantId, through: seq)
    }

    /// The time of a change, as precisely as it is stored (so what a write returns is what a
    /// later read finds).
    private func stamp() -> Date { Timestamp.truncate(now()) }

    /// `event` with its recipients (``NotificationPolicy``) and origin filled in, and the change
    /// that commits it: the event and its recipients' inbox lines, plus `ticket`, `entry` and
    /// `call` as they are after the change.
    private static func change(telling event: TicketEvent, _ staff: Staff, _ scope: SessionScope,
                               ticket: Ticket? = nil, entry: TicketEntry? = nil, call: CallRequest? = nil) -> Change {
        var event = event
        event.recipients = NotificationPolicy.recipients(of: event, agents: staff.agents, admins: staff.admins)
        event.originSession = scope.sessionId
        return Change(ticket: ticket, entry: entry, call: call, inbox: InboxDelivery(event), event: event)
    }

    private func actor(_ user: User) -> Actor { Actor(id: user.id, name: user.displayName, role: user.role) }

    private func staff(_ scope: SessionScope) throws(DesklineError) {
        guard scope.role.isStaff else { throw .forbidden("only agents and admins work the queue") }
    }

    /// Messages SHOW includes.
    public static let showEntries = 10
    /// HISTORY's page size when none is asked for, and its maximum.
    public static let defaultHistoryLimit = 20
    public static let maximumHistoryLimit = 100

    // MARK: Policy

    /// Whether `scope` may see `ticket`.
    public static func canSee(_ ticket: Ticket, _ scope: SessionScope) -> Bool {
        guard ticket.tenantId == scope.tenantId else { return false }
        return scope.role.isStaff || ticket.customerId == scope.customerId
    }

    private func customerId(_ scope: SessionScope) throws(DesklineError) -> CustomerID {
        guard scope.role == .customer, let id = scope.customerId else {
            throw .forbidden("only customers have their own tickets and calls")
        }
        return id
    }

    /// Refuses, before anything about the ticket itself is read, a customer asking for a ticket
    /// that is not in their own index: another customer's ticket and a missing one then cost the
    /// same work, so not even the reply time tells them apart.
    private func requireListed(_ id: TicketID, _ scope: SessionScope) async throws(DesklineError) {
        guard scope.role == .customer else { return }
        guard let customer = scope.customerId,
              try await store.ticketIDs(ofCustomer: customer, in: scope.tenantId).contains(id)
        else { throw .noSuchTicket(id) }
    }

    /// A ticket the caller may see, without reading its entries or marking anything read (what a
    /// client asks for on its own, like IRC's TOPIC, NAMES or WHO). `noSuchTicket` otherwise.
    public func visible(_ scope: SessionScope, _ id: TicketID) async throws(DesklineError) -> Ticket {
        try await visibleTicket(id, scope)
    }

    private func visibleTicket(_ id: TicketID, _ scope: SessionScope) async throws(DesklineError) -> Ticket {
        try await requireListed(id, scope)
        guard let ticket = try await store.ticket(id, in: scope.tenantId), Self.canSee(ticket, scope) else {
            throw .noSuchTicket(id)
        }
        return ticket
    }

    private func author(_ scope: SessionScope) async throws(DesklineError) -> User {
        guard let user = try await store.user(scope.userId, in: scope.tenantId) else {
            throw .notFound("your account no longer exists")
        }
        return user
    }

    // MARK: Customer operations

    /// The caller's own tickets, newest activity first, optionally only those with `status`.
    public func list(_ scope: SessionScope, status: TicketStatus?) async throws(DesklineError) -> [Ticket] {
        let customer = try customerId(scope)
        return try await store.tickets(ofCustomer: customer, in: scope.tenantId)
            .filter { status == nil || $0.status == status }
            .sorted { ($0.updatedAt, $0.id) > ($1.updatedAt, $1.id) }
    }

    /// Opens a ticket for the caller's own customer record. The tenant's admins are told (in the
    /// same commit: the ticket, its customer's index line, their inbox lines, `EVENT NEW`).
    public func create(_ scope: SessionScope, subject rawSubject: String) async throws(DesklineError) -> Ticket {
        let customer = try customerId(scope)
        let subject = try InputRules.subject(rawSubject)
        let user = try await author(scope)
        let staff = try await store.staff(in: scope.tenantId)
        let (actor, tenant, time) = (actor(user), scope.tenantId, stamp())
        let created = try await store.openTicket(in: tenant) { id in
            let ticket = Ticket.opened(id, in: tenant, by: customer, subject: subject, at: time)
            let event = TicketEvent(kind: .created, tenantId: tenant, ticket: ticket, actor: actor, at: time, customerUserId: user.id)
            return Self.change(telling: event, staff, scope, ticket: ticket)
        }
        guard let ticket = created.ticket else { throw .storage("the store returned no ticket") }
        await delivered(created)
        return ticket
    }

    /// Closes one of the caller's own tickets. Closing a closed ticket is refused.
    public func close(_ scope: SessionScope, _ id: TicketID) async throws(DesklineError) -> Ticket {
        _ = try customerId(scope)
        try await requireListed(id, scope)
        return try await change(scope, id, entry: .status, text: "closed") { (t: inout Ticket) throws(DesklineError) in
            guard t.status != .closed else { throw .ticketClosed(id) }
            t.status = .closed
        }.0
    }

    /// Decides one change of a ticket: `update` (which may refuse) and an entry, and who is told
    /// (``NotificationPolicy``), and has the store commit it with the inbox lines and the event.
    /// A ticket's changes are committed one after another, so its events come in ticket order
    /// (what HISTORY returns is what was pushed), while changes queued behind each other share a
    /// commit.
    private func change(_ scope: SessionScope, _ id: TicketID, entry kind: TicketEntry.Kind, text: String,
                        whenQueued: (@Sendable () -> Void)? = nil, _ update: @escaping @Sendable (inout Ticket) throws(DesklineError) -> Void) async throws(DesklineError) -> (Ticket, TicketEntry) {
        let user = try await author(scope)
        let staff = try await store.staff(in: scope.tenantId)
        let draft = TicketEntryDraft(kind: kind, authorId: user.id, authorName: user.displayName, authorRole: user.role, text: text)
        let (actor, tenant, time) = (actor(user), scope.tenantId, stamp())
        // A customer may only change their own tickets: then they are its customer's login.
        let customerSelf = user.role == .customer ? user.id : nil
        let result = try await store.changeTicket(id, in: tenant, whenQueued: whenQueued) { state throws(DesklineError) -> Change in
            var ticket = state.ticket
            guard Self.canSee(ticket, scope) else { throw .noSuchTicket(id) }
            try update(&ticket)
            let entry = ticket.append(draft, at: time)
            var customerLogin = customerSelf
            if customerLogin == nil { customerLogin = try state.customerLogin() }
            let event = TicketEvent(kind: .entry, tenantId: tenant, ticket: ticket, entry: entry, actor: actor, at: time,
                                    customerUserId: customerLogin)
            return Self.change(telling: event, staff, scope, ticket: ticket, entry: entry)
        }
        guard let ticket = result?.ticket, let entry = result?.entry else { throw .noSuchTicket(id) }
        await delivered(result)
        return (ticket, entry)
    }

    // MARK: Everyone

    /// One ticket and its latest entries. A customer's unread count is reset.
    public func show(_ scope: SessionScope, _ id: TicketID) async throws(DesklineError) -> (Ticket, [TicketEntry]) {
        var ticket = try await visibleTicket(id, scope)
        let entries = try await store.entries(of: id, in: scope.tenantId, after: nil, before: nil,
                                              limit: Self.showEntries, includeNotes: scope.role.isStaff)
        ticket = try await markRead(ticket, scope)
        return (ticket, entries)
    }

    /// A page of a ticket's entries, oldest first, before or after a message id (`5`, `5.2`).
    public func history(_ scope: SessionScope, _ id: TicketID, before: EntryPosition?, after: EntryPosition?, limit: Int?) async throws(DesklineError) -> [TicketEntry] {
        let limit = limit ?? Self.defaultHistoryLimit
        guard (1...Self.maximumHistoryLimit).contains(limit) else {
            throw .invalidArgument("the limit must be 1-\(Self.maximumHistoryLimit)")
        }
        let ticket = try await visibleTicket(id, scope)
        let entries = try await store.entries(of: id, in: scope.tenantId, after: after, before: before,
                                              limit: limit, includeNotes: scope.role.isStaff)
        _ = try await markRead(ticket, scope)
        return entries
    }

    /// Writes a message in a ticket the caller may see. Refused in a closed ticket; a customer's
    /// message reopens a resolved one; a helpdesk message counts as unread for the customer.
    /// `whenQueued`: see ``Store/changeTicket(_:in:whenQueued:_:)``
    /// (not called if the message is refused before it is queued).
    public func post(_ scope: SessionScope, _ id: TicketID, text rawText: String,
                     whenQueued: (@Sendable () -> Void)? = nil) async throws(DesklineError) -> (Ticket, TicketEntry) {
        let text = try InputRules.messageText(rawText)
        try await requireListed(id, scope)
        return try await change(scope, id, entry: .message, text: text, whenQueued: whenQueued) { (t: inout Ticket) throws(DesklineError) in
            guard t.status != .closed else { throw .ticketClosed(id) }
            if scope.role == .customer {
                if t.status == .resolved { t.status = .open }
            } else {
                t.customerUnread += 1
            }
        }
    }

    // MARK: Staff

    /// What QUEUE can show.
    public enum QueueFilter: String, Sendable, CaseIterable {
        case unassigned, mine, open, pending, resolved, closed, all
    }

    /// The tenant's tickets for agents and admins, newest activity first. Without a filter:
    /// every ticket that is not closed.
    public func queue(_ scope: SessionScope, _ filter: QueueFilter?) async throws(DesklineError) -> [Ticket] {
        try staff(scope)
        return try await store.tickets(in: scope.tenantId).filter { t in
            switch filter {
            case nil: t.status != .closed
            case .unassigned?: t.assigneeId == nil && t.status != .closed
            case .mine?: t.assigneeId == scope.userId && t.status != .closed
            case .all?: true
            case .open?: t.status == .open
            case .pending?: t.status == .pending
            case .resolved?: t.status == .resolved
            case .closed?: t.status == .closed
            }
        }.sorted { ($0.updatedAt, $0.id) > ($1.updatedAt, $1.id) }
    }

    /// An internal note: kept in the ticket, shown to staff only, never to the customer.
    public func note(_ scope: SessionScope, _ id: TicketID, text rawText: String,
                     whenQueued: (@Sendable () -> Void)? = nil) async throws(DesklineError) -> (Ticket, TicketEntry) {
        try staff(scope)
        let text = try InputRules.messageText(rawText, field: "note")
        return try await change(scope, id, entry: .note, text: text, whenQueued: whenQueued) { _ in }
    }

    /// Assigns a ticket to an agent or admin of the tenant (or to nobody, with nil).
    public func assign(_ scope: SessionScope, _ id: TicketID, to assignee: UserID?) async throws(DesklineError) -> (Ticket, TicketEntry) {
        try staff(scope)
        var name: String?
        if let assignee {
            guard let user = try await store.user(assignee, in: scope.tenantId), user.role.isStaff else {
                throw .notFound("No agent or admin \(assignee) in your helpdesk.")
            }
            name = user.displayName
        }
        let text = name.map { "assigned to \($0)" } ?? "unassigned"
        let assigneeName = name
        return try await change(scope, id, entry: .status, text: text) { (t: inout Ticket) throws(DesklineError) in
            t.assigneeId = assignee
            t.assigneeName = assigneeName
        }
    }

    /// Sets a ticket's status. Staff may also reopen a closed ticket.
    public func setStatus(_ scope: SessionScope, _ id: TicketID, _ status: TicketStatus) async throws(DesklineError) -> (Ticket, TicketEntry) {
        try staff(scope)
        return try await change(scope, id, entry: .status, text: status.rawValue) { (t: inout Ticket) throws(DesklineError) in
            t.status = status
        }
    }

    /// The staff user with this email in the caller's tenant (for ASSIGN).
    public func staffUser(_ scope: SessionScope, email rawEmail: String) async throws(DesklineError) -> User {
        let email = try InputRules.email(rawEmail)
        let refs = try await store.accounts(withEmail: email).filter { $0.tenantId == scope.tenantId }
        guard let ref = refs.first, let user = try await store.user(ref.userId, in: scope.tenantId), user.role.isStaff else {
            throw .notFound("No agent or admin \(email) in your helpdesk.")
        }
        return user
    }

    /// Marks what the customer just saw as read: only the unread messages counted when the
    /// ticket was read, so a reply arriving meanwhile stays unread.
    private func markRead(_ ticket: Ticket, _ scope: SessionScope) async throws(DesklineError) -> Ticket {
        guard scope.role == .customer, ticket.customerUnread > 0 else { return ticket }
        let seen = ticket.customerUnread
        let updated = try await store.changeTicket(ticket.id, in: scope.tenantId) { state throws(DesklineError) -> Change in
            var ticket = state.ticket
            ticket.customerUnread = max(0, ticket.customerUnread - seen)
            return Change(ticket: ticket)
        }
        return updated?.ticket ?? ticket
    }

    // MARK: Calls

    /// Asks for a phone call to the customer's number on record, optionally about one of their tickets.
    public func requestCall(_ scope: SessionScope, ticket: TicketID?, note rawNote: String?) async throws(DesklineError) -> CallRequest {
        let customerId = try customerId(scope)
        let about = try await ticket.asyncMap { (id) throws(DesklineError) in try await visibleTicket(id, scope) }
        let note = try rawNote.map { (n) throws(DesklineError) in try InputRules.messageText(n, field: "note") }
        guard let customer = try await store.customer(customerId, in: scope.tenantId) else {
            throw .notFound("your customer record no longer exists")
        }
        guard let phone = customer.phone else { throw .noPhone }
        let user = try await author(scope)
        let staff = try await store.staff(in: scope.tenantId)
        let (actor, tenant, time) = (actor(user), scope.tenantId, stamp())
        let filed = try await store.fileCall(in: tenant) { id in
            let call = CallRequest.filed(id, in: tenant, by: customerId, about: ticket, phone: phone, note: note, at: time)
            let event = TicketEvent(kind: .call, tenantId: tenant, ticket: about, call: call, actor: actor, at: time, customerUserId: user.id)
            return Self.change(telling: event, staff, scope, call: call)
        }
        guard let call = filed.call else { throw .storage("the store returned no call request") }
        await delivered(filed)
        return call
    }

    /// What the agents' CALLS can show.
    public enum CallFilter: String, Sendable, CaseIterable {
        /// Requested or accepted, not done.
        case open
        /// Accepted by the caller, not done.
        case mine
        case all
    }

    /// The tenant's call requests for agents and admins, oldest first (the order to call back in).
    public func callQueue(_ scope: SessionScope, _ filter: CallFilter) async throws(DesklineError) -> [CallRequest] {
        try staff(scope)
        return try await store.calls(in: scope.tenantId).filter { c in
            switch filter {
            case .open: c.status != .done
            case .mine: c.status == .accepted && c.agentId == scope.userId
            case .all: true
            }
        }.sorted { $0.id.number < $1.id.number }
    }

    /// An agent takes a requested call; the customer is told who will phone.
    public func acceptCall(_ scope: SessionScope, _ id: CallID) async throws(DesklineError) -> CallRequest {
        try staff(scope)
        return try await changeCall(scope, id) { (c: inout CallRequest, user: User) throws(DesklineError) in
            switch c.status {
            case .requested: break
            case .accepted where c.agentId == user.id: throw .conflict("You have already accepted call \(id).")
            case .accepted: throw .conflict("Call \(id) was already accepted by \(c.agentName ?? "another agent").")
            case .done: throw .conflict("Call \(id) is already done.")
            }
            c.status = .accepted
            c.agentId = user.id
            c.agentName = user.displayName
        }
    }

    /// The call happened: marked done by the agent who accepted it (or an admin), with an
    /// optional note of the outcome.
    public func finishCall(_ scope: SessionScope, _ id: CallID, outcome rawOutcome: String?) async throws(DesklineError) -> CallRequest {
        try staff(scope)
        let outcome = try rawOutcome.map { (o) throws(DesklineError) in try InputRules.messageText(o, field: "note") }
        return try await changeCall(scope, id) { (c: inout CallRequest, user: User) throws(DesklineError) in
            guard c.status == .accepted else {
                throw c.status == .done ? .conflict("Call \(id) is already done.") : .callNotAccepted(id)
            }
            guard c.agentId == user.id || user.role == .admin else {
                throw .conflict("Call \(id) was accepted by \(c.agentName ?? "another agent"); they mark it done.")
            }
            c.status = .done
            c.outcome = outcome
        }
    }

    /// Decides one change of a call request by a staff user (`update`, which may refuse) and who
    /// is told, and has the store commit it with the inbox lines and the event.
    private func changeCall(_ scope: SessionScope, _ id: CallID,
                            _ update: @escaping @Sendable (inout CallRequest, User) throws(DesklineError) -> Void) async throws(DesklineError) -> CallRequest {
        let user = try await author(scope)
        let staff = try await store.staff(in: scope.tenantId)
        let (actor, tenant, time) = (actor(user), scope.tenantId, stamp())
        let changed = try await store.changeCall(id, in: tenant) { state throws(DesklineError) -> Change in
            var call = state.call
            try update(&call, user)
            call.updatedAt = time
            let event = TicketEvent(kind: .call, tenantId: tenant, ticket: try state.ticket(), call: call, actor: actor, at: time,
                                    customerUserId: try state.customerLogin())
            return Self.change(telling: event, staff, scope, call: call)
        }
        guard let call = changed?.call else { throw .notFound("No call \(id) in your helpdesk.") }
        await delivered(changed)
        return call
    }

    /// The caller's own call requests, newest first.
    public func calls(_ scope: SessionScope) async throws(DesklineError) -> [CallRequest] {
        let customerId = try customerId(scope)
        return try await store.calls(ofCustomer: customerId, in: scope.tenantId).sorted { $0.id.number > $1.id.number }
    }
}

extension Optional {
    /// `map` for an async transform.
    func asyncMap<U, E: Error>(_ transform: (Wrapped) async throws(E) -> U) async throws(E) -> U? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
