import DesklineCore
import Synchronization

/// The domain services the gateway's commands call.
public struct GatewayServices: Sendable {
    public var accounts: AccountService
    public var tickets: TicketService
    public var notifications: NotificationService
    /// Live sessions; also the ``EventSink`` the ticket service publishes to.
    public var hub: SessionHub
    /// Failed-login limits shared by all sessions.
    let loginGuard: LoginGuard
    /// How long after it started a failed LOGIN is answered, at the soonest.
    let loginFailureDelay: Duration

    public init(accounts: AccountService, tickets: TicketService, notifications: NotificationService, hub: SessionHub,
                limits: GatewayConfiguration.Limits = .init()) {
        self.accounts = accounts
        self.tickets = tickets
        self.notifications = notifications
        self.hub = hub
        self.loginGuard = LoginGuard(LoginThrottle(
            perAddress: .init(limit: limits.loginFailuresPerAddress, window: .seconds(limits.loginFailureWindowPerAddressSeconds)),
            perAccount: .init(limit: limits.loginFailuresPerAccount, window: .seconds(limits.loginFailureWindowPerAccountSeconds))))
        self.loginFailureDelay = .milliseconds(limits.loginFailureDelayMilliseconds)
    }

    /// Wires the services over one store, with ticket events going to a fresh hub.
    public static func make(store: any Store, accounts: AccountService, limits: GatewayConfiguration.Limits = .init()) -> GatewayServices {
        let hub = SessionHub()
        return GatewayServices(accounts: accounts, tickets: TicketService(store: store, sink: hub),
                               notifications: NotificationService(store: store), hub: hub, limits: limits)
    }
}

/// The ``LoginThrottle`` behind a lock.
final class LoginGuard: Sendable {
    private let throttle: Mutex<LoginThrottle>
    init(_ throttle: LoginThrottle) { self.throttle = Mutex(throttle) }

    func retryAfter(address: String, account: String) -> Duration? {
        throttle.withLock { $0.retryAfter(address: address, account: account, now: .now) }
    }

    func failed(address: String, account: String) {
        throttle.withLock { $0.recordFailure(address: address, account: account, now: .now) }
    }

    func succeeded(account: String) {
        throttle.withLock { $0.recordSuccess(account: account) }
    }
}
