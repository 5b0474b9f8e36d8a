import DesklineCore

/// The domain services the gateway's commands call.
public struct GatewayServices: Sendable {
    public var accounts: AccountService
    public var tickets: TicketService
    public var notifications: NotificationService
    /// Live sessions; also the ``EventSink`` the ticket service publishes to.
    public var hub: SessionHub

    public init(accounts: AccountService, tickets: TicketService, notifications: NotificationService, hub: SessionHub) {
        self.accounts = accounts
        self.tickets = tickets
        self.notifications = notifications
        self.hub = hub
    }

    /// Wires the services over one store, with ticket events going to a fresh hub.
    public static func make(store: any Store, accounts: AccountService) -> GatewayServices {
        let hub = SessionHub()
        return GatewayServices(accounts: accounts, tickets: TicketService(store: store, sink: hub),
                               notifications: NotificationService(store: store), hub: hub)
    }
}
