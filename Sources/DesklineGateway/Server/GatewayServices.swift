import DesklineCore
import Logging

/// The domain services the gateway's commands call.
public struct GatewayServices: Sendable {
    public var accounts: AccountService
    public var tickets: TicketService
    public var notifications: NotificationService
    /// Live sessions, and the pushes to them of the store's committed events (``followEvents(logger:)``).
    public var hub: SessionHub
    /// Where the events come from.
    let store: any Store
    /// Failed-login limits shared by all sessions (and, on a store several nodes share, by all
    /// nodes).
    let loginLimiter: any LoginLimiter
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
        let perAddress = LoginThrottle.Rule(limit: limits.loginFailuresPerAddress, window: .seconds(limits.loginFailureWindowPerAddressSeconds))
        let perAccount = LoginThrottle.Rule(limit: limits.loginFailuresPerAccount, window: .seconds(limits.loginFailureWindowPerAccountSeconds))
        self.loginLimiter = store.sharedNodeState?.loginLimiter(perAddress: perAddress, perAccount: perAccount)
            ?? LocalLoginLimiter(LoginThrottle(perAddress: perAddress, perAccount: perAccount))
        self.loginFailureDelay = .milliseconds(limits.loginFailureDelayMilliseconds)
    }

    /// Wires the services over one store, with a fresh hub.
    public static func make(store: any Store, accounts: AccountService, limits: GatewayConfiguration.Limits = .init()) -> GatewayServices {
        let hub = SessionHub(presence: store.sharedNodeState?.presence ?? LocalPresence())
        return GatewayServices(store: store, accounts: accounts, tickets: TicketService(store: store, delivery: hub),
                               notifications: NotificationService(store: store), hub: hub, limits: limits)
    }

    /// Pushes the store's committed events to the hub's sessions as the store commits them
    /// (normally on the committing thread, before the writes are answered), each tenant's in
    /// order, until the returned subscription is cancelled (then no event is pushed any more, and
    /// answers no longer wait for pushes). Meanwhile a change is answered once its event was
    /// pushed.
    public func followEvents(logger: Logger) -> EventSubscription {
        let hub = self.hub
        hub.startDelivering()
        let follower = LiveEventFollower(catchingUpFrom: store, logger: logger,
                                         deliver: { hub.publish($0) }, skipped: { hub.delivered($0, through: $1) })
        let subscription = store.followCommittedEvents { follower.receive($0) }
        return EventSubscription {
            subscription.cancel()
            follower.stop()
            hub.stopDelivering()
        }
    }
}
