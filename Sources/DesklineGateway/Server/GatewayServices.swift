import DesklineCore

/// The domain services the gateway's commands call.
public struct GatewayServices: Sendable {
    public var accounts: AccountService
    public var tickets: TicketService

    public init(accounts: AccountService, tickets: TicketService) {
        self.accounts = accounts
        self.tickets = tickets
    }
}
