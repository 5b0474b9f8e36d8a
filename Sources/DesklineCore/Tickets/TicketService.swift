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
    let now: @Sendable () -> Date
    let sink: (any EventSink)?
    let notifications: NotificationService
    let logger: Logger
    /// One change at a time per call request (stored, then pushed), so a call's pushes come in
    /// the order its changes were stored. (Ticket changes are published by the store's writer.)
    let serializer = KeyedSerializer<String>()

    /// - Parameter sink: where events go once stored (the gateway's session hub).
    public init(store: any Store, sink: (any EventSink)? = nil, logger: Logger = Logger(label: "deskline.tickets"),
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.now = now
        self.sink = sink
        self.logger = logger
        self.notifications = NotificationService(store: store)
    }

    /// Pushes a stored event to whoever should see it live, then stores the notifications it
    /// causes in their inboxes. The event's record is durable already (the caller stored it), so
    /// the push need not wait for the inboxes; the caller's reply does. Inbox trouble does not
    /// undo the change: it is logged.
    private func emit(_ event: TicketEvent, _ scope: SessionScope) async {
        var event = event
        event.originSession = scope.sessionId
        do {
            event = try await notifications.address(event)
        } catch {
            logger.error("could not address notifications", metadata: ["tenant": "\(event.tenantId)", "error": "\(error)"])
        }
        sink?.publish(event)
        do {
            try await notifications.deliver(event)
        } catch {
            logger.error("could not store notifications", metadata: ["tenant": "\(event.tenantId)", "error": "\(error)"])
        }
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

    /// Opens a ticket for the caller's own customer record.
    public func create(_ scope: SessionScope, subject rawSubject: String) async throws(DesklineError) -> Ticket {
        let customer = try customerId(scope)
        let subject = try InputRules.subject(rawSubject)
        let user = try await author(scope)
        let staff = try await store.staff(in: scope.tenantId)
        let (actor, tenant) = (actor(user), scope.tenantId)
        @Sendable func event(_ ticket: Ticket) -> TicketEvent {
            TicketEvent(kind: .created, tenantId: tenant, ticket: ticket, actor: actor, at: ticket.createdAt, customerUserId: user.id)
        }
        // Addressed and stored with the ticket; pushed from the store's writer once durable, so
        // EVENT NEW comes before any later change of the ticket is pushed.
        let notify: TicketCreationNotifier = { ticket in
            var created = event(ticket)
            created.recipients = NotificationPolicy.recipients(of: created, agents: staff.agents, admins: staff.admins)
            return EntryNotice(customerUserId: user.id, recipients: created.recipients, notification: NotificationService.draft(for: created))
        }
        var publish: StoredTicketCreationHandler?
        if let sink {
            publish = { ticket, notice in
                var created = event(ticket)
                created.recipients = notice?.recipients ?? []
                created.originSession = scope.sessionId
                sink.publish(created)
            }
        }
        return try await store.createTicket(customer: customer, subject: subject, in: tenant, at: now(), notifying: notify, whenStored: publish)
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

    /// Stores one change of a ticket with its entry and the notifications it causes (one
    /// durable write), and publishes it from the store's writer once durable. The writer stores
    /// a ticket's changes one after another and publishes them in that order, so pushes come in
    /// ticket order (what HISTORY returns is what was pushed) while changes queued behind each
    /// other share a commit.
    private func change(_ scope: SessionScope, _ id: TicketID, entry kind: TicketEntry.Kind, text: String,
                        whenQueued: (@Sendable () -> Void)? = nil, _ update: @escaping @Sendable (inout Ticket) throws(DesklineError) -> Void) async throws(DesklineError) -> (Ticket, TicketEntry) {
        let user = try await author(scope)
        let draft = TicketEntryDraft(kind: kind, authorId: user.id, authorName: user.displayName, authorRole: user.role, text: text)
        let notify = try await notifier(scope, user)
        let actor = actor(user)
        var publish: StoredTicketHandler?
        if let sink {
            publish = { (ticket: Ticket, entry: TicketEntry?, notice: EntryNotice?) in
                guard let entry else { return }
                var event = TicketEvent(kind: .entry, tenantId: scope.tenantId, ticket: ticket, entry: entry, actor: actor, at: entry.at,
                                        customerUserId: notice?.customerUserId)
                event.recipients = notice?.recipients ?? []
                event.originSession = scope.sessionId
                sink.publish(event)
            }
        }
        let result = try await store.updateTicket(id, in: scope.tenantId, appending: draft, at: now(), notifying: notify,
                                                  whenQueued: whenQueued, whenStored: publish) { (t: inout Ticket) throws(DesklineError) in
            guard Self.canSee(t, scope) else { throw .noSuchTicket(id) }
            try update(&t)
        }
        guard case let (ticket, entry?, _)? = result else { throw .noSuchTicket(id) }
        return (ticket, entry)
    }

    /// Works out, inside the store's write, whom an entry by `user` notifies (the rules of
    /// ``NotificationPolicy``) and what their inboxes get.
    private func notifier(_ scope: SessionScope, _ user: User) async throws(DesklineError) -> EntryNotifier {
        let staff = try await store.staff(in: scope.tenantId)
        let (agents, admins) = (staff.agents, staff.admins)
        let (actor, tenant) = (actor(user), scope.tenantId)
        // A customer may only change their own tickets: then they are its customer's login.
        let customerSelf = user.role == .customer ? user.id : nil
        return { ticket, entry, customerLogin in
            var event = TicketEvent(kind: .entry, tenantId: tenant, ticket: ticket, entry: entry, actor: actor, at: entry.at,
                                    customerUserId: try customerSelf ?? customerLogin())
            event.recipients = NotificationPolicy.recipients(of: event, agents: agents, admins: admins)
            return EntryNotice(customerUserId: event.customerUserId, recipients: event.recipients,
                               notification: NotificationService.draft(for: event))
        }
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
    /// `whenQueued`: see ``Store/updateTicket(_:in:appending:at:notifying:whenQueued:whenStored:_:)``
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
        let updated = try await store.updateTicket(ticket.id, in: scope.tenantId, appending: nil, at: now()) { (t: inout Ticket) throws(DesklineError) in
            t.customerUnread = max(0, t.customerUnread - seen)
        }
        return updated?.0 ?? ticket
    }

    // MARK: Calls

    /// Asks for a phone call to the customer's number on record, optionally about one of their tickets.
    public func requestCall(_ scope: SessionScope, ticket: TicketID?, note rawNote: String?) async throws(DesklineError) -> CallRequest {
        let customerId = try customerId(scope)
        if let ticket { _ = try await visibleTicket(ticket, scope) }
        let note = try rawNote.map { (n) throws(DesklineError) in try InputRules.messageText(n, field: "note") }
        guard let customer = try await store.customer(customerId, in: scope.tenantId) else {
            throw .notFound("your customer record no longer exists")
        }
        guard let phone = customer.phone else { throw .noPhone }
        let call = try await store.createCall(customer: customerId, ticket: ticket, phone: phone, note: note,
                                              in: scope.tenantId, at: now())
        let user = try await author(scope)
        let about = try await ticket.asyncMap { (id) throws(DesklineError) in try await store.ticket(id, in: scope.tenantId) } ?? nil
        await emit(TicketEvent(kind: .call, tenantId: scope.tenantId, ticket: about, call: call, actor: actor(user),
                               at: call.createdAt, customerUserId: user.id), scope)
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
        let user = try await author(scope)
        let store = self.store
        let time = now()
        return try await serializer.run("\(scope.tenantId.rawValue)/call\(id.number)") { () throws(DesklineError) -> CallRequest in
            let call = try await store.updateCall(id, in: scope.tenantId, at: time) { (c: inout CallRequest) throws(DesklineError) in
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
            guard let call else { throw .notFound("No call \(id) in your helpdesk.") }
            await emitCall(call, actor: actor(user), scope)
            return call
        }
    }

    /// The call happened: marked done by the agent who accepted it (or an admin), with an
    /// optional note of the outcome.
    public func finishCall(_ scope: SessionScope, _ id: CallID, outcome rawOutcome: String?) async throws(DesklineError) -> CallRequest {
        try staff(scope)
        let user = try await author(scope)
        let outcome = try rawOutcome.map { (o) throws(DesklineError) in try InputRules.messageText(o, field: "note") }
        let store = self.store
        let time = now()
        return try await serializer.run("\(scope.tenantId.rawValue)/call\(id.number)") { () throws(DesklineError) -> CallRequest in
            let call = try await store.updateCall(id, in: scope.tenantId, at: time) { (c: inout CallRequest) throws(DesklineError) in
                guard c.status == .accepted else {
                    throw .conflict(c.status == .done ? "Call \(id) is already done." : "Accept call \(id) first: CALL ACCEPT \(id).")
                }
                guard c.agentId == user.id || user.role == .admin else {
                    throw .conflict("Call \(id) was accepted by \(c.agentName ?? "another agent"); they mark it done.")
                }
                c.status = .done
                c.outcome = outcome
            }
            guard let call else { throw .notFound("No call \(id) in your helpdesk.") }
            await emitCall(call, actor: actor(user), scope)
            return call
        }
    }

    private func emitCall(_ call: CallRequest, actor: Actor, _ scope: SessionScope) async {
        let about = try? await call.ticketId.asyncMap { (id) throws(DesklineError) in try await store.ticket(id, in: scope.tenantId) } ?? nil
        await emit(TicketEvent(kind: .call, tenantId: scope.tenantId, ticket: about, call: call, actor: actor, at: call.updatedAt), scope)
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
