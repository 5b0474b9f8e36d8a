import struct Foundation.Date

/// Who did something.
public struct Actor: Sendable, Codable, Equatable {
    public var id: UserID
    public var name: String
    public var role: Role

    public init(id: UserID, name: String, role: Role) {
        self.id = id
        self.name = name
        self.role = role
    }
}

/// Something that happened to a ticket or a call request: pushed live to the sessions allowed to
/// see it, and kept in the inbox of the people the notification rules name. A fact, with no wire
/// text in it: `Codable`, so that a store can keep it in an event log (issue #17).
public struct TicketEvent: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// A customer opened a ticket.
        case created
        /// A new conversation entry (message, note, status change, assignment).
        case entry
        /// A customer asked for a phone call.
        case call
    }

    public var kind: Kind
    public var tenantId: TenantID
    /// The ticket after the change (for calls: the ticket the call is about, if any).
    public var ticket: Ticket?
    public var entry: TicketEntry?
    public var call: CallRequest?
    public var actor: Actor
    public var at: Date
    /// Users to notify durably (their inbox), by the rules of ``NotificationPolicy``.
    public var recipients: [UserID] = []
    /// The login of the ticket's (or call's) customer, who sees the customer-visible events.
    public var customerUserId: UserID?
    /// The connection that caused the event (it got an `OK` instead).
    public var originSession: Int?

    /// Whether a customer may ever see this event (internal notes: never).
    public var isVisibleToCustomers: Bool { entry?.isVisibleToCustomer ?? true }

    /// Whether a session with `scope` may receive this event at all.
    public func mayReach(_ scope: SessionScope) -> Bool {
        guard scope.tenantId == tenantId else { return false }
        if scope.role.isStaff { return true }
        guard isVisibleToCustomers else { return false }
        if let ticket { return TicketService.canSee(ticket, scope) }
        return call?.customerId == scope.customerId
    }
}

/// The seed's notification rules: who is told about what.
public enum NotificationPolicy {
    /// - Customer writes in a ticket → the assigned agent; unassigned → every agent of the tenant.
    /// - Customer requests a call → the assigned agent of the tied ticket, else every agent; an
    ///   agent accepting it or marking it done → the customer.
    /// - Customer opens a ticket → every admin of the tenant.
    /// - Helpdesk reply, status change or assignment → the ticket's customer (never for notes);
    ///   an assignment also tells the new assignee.
    /// - An internal note → the assigned agent.
    /// Nobody is notified of their own action.
    public static func recipients(of event: TicketEvent, agents: [UserID], admins: [UserID]) -> [UserID] {
        var users: [UserID] = []
        let assignee = event.ticket?.assigneeId
        switch event.kind {
        case .created:
            users = admins
        case .call where event.actor.role == .customer:
            users = assignee.map { [$0] } ?? agents
        case .call: // an agent accepted or finished it: tell the customer
            users = event.customerUserId.map { [$0] } ?? []
        case .entry:
            guard let entry = event.entry else { break }
            switch (entry.kind, event.actor.role) {
            case (.note, _):
                users = assignee.map { [$0] } ?? []
            case (_, .customer):
                users = assignee.map { [$0] } ?? agents
            case (.message, _), (.status, _):
                users = event.customerUserId.map { [$0] } ?? []
                if entry.kind == .status, let assignee { users.append(assignee) }
            }
        }
        var seen = Set<UserID>()
        return users.filter { $0 != event.actor.id && seen.insert($0).inserted }
    }
}

/// Receives events once they are durable; the gateway pushes them to sessions. Called from
/// the store's writer thread too (in the order a ticket's changes were stored), so it must not
/// block or wait.
public protocol EventSink: Sendable {
    func publish(_ event: TicketEvent)
}

/// One entry of a user's inbox.
public struct Notification: Sendable, Codable, Equatable {
    /// 1, 2, 3, ... per user.
    public var id: Int
    public var type: String
    public var ticket: TicketID?
    public var call: CallID?
    public var actorName: String
    public var text: String
    public var at: Date

    public init(id: Int, type: String, ticket: TicketID?, call: CallID?, actorName: String, text: String, at: Date) {
        self.id = id
        self.type = type
        self.ticket = ticket
        self.call = call
        self.actorName = actorName
        self.text = text
        self.at = at
    }
}
