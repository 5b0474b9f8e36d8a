import DesklineCore
import Logging
import Synchronization

/// The domain services the gateway's commands call.
public struct GatewayServices: Sendable {
    public var accounts: AccountService
    public var tickets: TicketService
    public var notifications: NotificationService
    /// Live sessions, and the pushes to them of the store's committed events (``followEvents(_:logger:)``).
    public var hub: SessionHub
    /// Where the events come from.
    let store: any Store
    /// Failed-login limits shared by all sessions.
    let loginGuard: LoginGuard
    /// The IRC dialect's nicks.
    let nicks = NickDirectory()
    /// How long after it started a failed LOGIN is answered, at the soonest.
    let loginFailureDelay: Duration

    public init(store: any Store, accounts: AccountService, tickets: TicketService, notifications: NotificationService, hub: SessionHub,
                limits: GatewayConfiguration.Limits = .init()) {
        self.store = store
        self.accounts = accounts
        self.tickets = tickets
        self.notifications = notifications
        self.hub = hub
        self.loginGuard = LoginGuard(LoginThrottle(
            perAddress: .init(limit: limits.loginFailuresPerAddress, window: .seconds(limits.loginFailureWindowPerAddressSeconds)),
            perAccount: .init(limit: limits.loginFailuresPerAccount, window: .seconds(limits.loginFailureWindowPerAccountSeconds))))
        self.loginFailureDelay = .milliseconds(limits.loginFailureDelayMilliseconds)
    }

    /// Wires the services over one store, with a fresh hub.
    public static func make(store: any Store, accounts: AccountService, limits: GatewayConfiguration.Limits = .init()) -> GatewayServices {
        let hub = SessionHub()
        return GatewayServices(store: store, accounts: accounts, tickets: TicketService(store: store, delivery: hub),
                               notifications: NotificationService(store: store), hub: hub, limits: limits)
    }

    /// Pushes the events of `feed` (the store's ``Store/committedEvents()``, subscribed to before
    /// any session could cause one) to the hub's sessions, each tenant's in order, until the feed
    /// ends or the task is cancelled. Meanwhile a change is answered once its event was pushed.
    public func followEvents(_ feed: AsyncStream<[TicketEvent]>, logger: Logger) async {
        let hub = self.hub
        hub.startDelivering()
        await EventFollower.run(feed, catchingUpFrom: store, logger: logger,
                                deliver: { hub.publish($0) }, skipped: { hub.delivered($0, through: $1) })
        hub.stopDelivering()
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
