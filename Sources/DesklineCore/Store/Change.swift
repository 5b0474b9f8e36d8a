import struct Foundation.Date

/// One write, as Core decided it: what a store makes durable as one unit — the ticket's or the
/// call's new state, the entry it appends, the inbox lines and the event — all together or
/// nothing. The store decides nothing about it: it checks that the change is about what it was
/// asked to change, numbers the event in the tenant's event log (``TicketEvent/seq``) and the
/// inbox lines in each inbox, and writes.
public struct Change: Sendable, Equatable {
    /// The ticket after the change (nil: the change is about a call only, or changes no ticket).
    public var ticket: Ticket?
    /// The conversation entry the change appends to `ticket`.
    public var entry: TicketEntry?
    /// The call request after the change.
    public var call: CallRequest?
    /// What the change tells the people the notification rules name: the same notification in
    /// each of their inboxes.
    public var inbox: InboxDelivery?
    /// The fact pushed to the sessions that see it, through the tenant's event log.
    public var event: TicketEvent?

    public init(ticket: Ticket? = nil, entry: TicketEntry? = nil, call: CallRequest? = nil,
                inbox: InboxDelivery? = nil, event: TicketEvent? = nil) {
        self.ticket = ticket
        self.entry = entry
        self.call = call
        self.inbox = inbox
        self.event = event
    }
}

/// The same notification for each of `users`; the store numbers it in each inbox.
public struct InboxDelivery: Sendable, Equatable {
    public var notification: Notification
    public var users: [UserID]

    public init(notification: Notification, users: [UserID]) {
        self.notification = notification
        self.users = users
    }

    /// What `event`'s recipients get (nil: nobody is notified).
    public init?(_ event: TicketEvent) {
        guard !event.recipients.isEmpty else { return nil }
        self.init(notification: NotificationService.draft(for: event), users: event.recipients)
    }
}

/// A ticket as a write finds it, with what a decision about it may need to read inside the same
/// unit of work. A store reads the ticket (locked against other writes of it until the change is
/// stored) and answers `customerLogin` from the same state: a database store from the row it
/// locked, the file store from the customer's record, read only if asked.
public struct TicketState: Sendable {
    public var ticket: Ticket
    /// The login of the ticket's customer (nil if the customer has none).
    public var customerLogin: @Sendable () throws(DesklineError) -> UserID?

    public init(ticket: Ticket, customerLogin: @escaping @Sendable () throws(DesklineError) -> UserID?) {
        self.ticket = ticket
        self.customerLogin = customerLogin
    }
}

/// A call request as a write finds it (see ``TicketState``).
public struct CallState: Sendable {
    public var call: CallRequest
    /// The login of the call's customer (nil if the customer has none).
    public var customerLogin: @Sendable () throws(DesklineError) -> UserID?
    /// The ticket the call is about, as it is now (nil: none, or no longer there).
    public var ticket: @Sendable () throws(DesklineError) -> Ticket?

    public init(call: CallRequest, customerLogin: @escaping @Sendable () throws(DesklineError) -> UserID?,
                ticket: @escaping @Sendable () throws(DesklineError) -> Ticket?) {
        self.call = call
        self.customerLogin = customerLogin
        self.ticket = ticket
    }
}

/// Decides a change from the state a write found; throwing refuses the write (nothing is stored).
public typealias TicketDecision = @Sendable (TicketState) throws(DesklineError) -> Change
public typealias CallDecision = @Sendable (CallState) throws(DesklineError) -> Change
/// Decides a new ticket or call from the number the store hands out next.
public typealias NewTicketDecision = @Sendable (TicketID) throws(DesklineError) -> Change
public typealias NewCallDecision = @Sendable (CallID) throws(DesklineError) -> Change

extension Change {
    /// What a write was asked to change.
    public enum Subject: Sendable, Equatable {
        /// Ticket `id`; a change of an existing ticket keeps its customer.
        case ticket(TicketID, customer: CustomerID?)
        /// Call request `id`; a change of an existing call keeps its customer.
        case call(CallID, customer: CustomerID?)
    }

    /// Refuses a change that is not about `subject` of `tenant` (`storage`: a bug in a decision,
    /// not the client's doing), so a store commits nothing else: the ticket or call itself, of the
    /// tenant (and customer) written to; an event of that tenant, not yet numbered, about that
    /// ticket or call.
    public func validate(_ subject: Subject, in tenant: TenantID) throws(DesklineError) {
        var valid: Bool
        switch subject {
        case .ticket(let id, let customer):
            valid = call == nil
            if let ticket {
                valid = valid && ticket.id == id && ticket.tenantId == tenant && (customer.map { $0 == ticket.customerId } ?? true)
            } else {
                valid = false
            }
            if let event { valid = valid && (event.ticket?.id ?? id) == id && event.call == nil }
        case .call(let id, let customer):
            valid = ticket == nil && entry == nil
            if let call {
                valid = valid && call.id == id && call.tenantId == tenant && (customer.map { $0 == call.customerId } ?? true)
            } else {
                valid = false
            }
            if let event { valid = valid && event.call?.id == id }
        }
        if let event { valid = valid && event.tenantId == tenant && event.seq == nil }
        guard valid else { throw .storage("a change of \(subject) of \(tenant) is about something else") }
    }
}
