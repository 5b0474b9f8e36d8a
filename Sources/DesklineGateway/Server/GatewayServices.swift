import DesklineCore

/// The domain services the gateway's commands call.
public struct GatewayServices: Sendable {
    public var accounts: AccountService

    public init(accounts: AccountService) {
        self.accounts = accounts
    }
}
