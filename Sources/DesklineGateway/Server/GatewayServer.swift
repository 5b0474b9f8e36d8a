import DesklineCore
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// The listeners: plaintext TCP and, when configured, TLS. Accepts connections and runs one
/// ``Session`` per connection; both listeners share the connection limits and the sessions.
///
/// Run it in a `ServiceGroup` (the `deskline serve` command does): on SIGTERM/SIGINT it stops
/// accepting, sends every session `EVENT SHUTDOWN`, gives them a moment to receive it, and
/// returns. Tests call ``bind()`` to learn the port and ``shutdown()`` to stop it.
public final class GatewayServer: Service, Sendable {

    private let configuration: GatewayConfiguration
    private let services: GatewayServices
    private let logger: Logger
    private let group: any EventLoopGroup
    private let registry = SessionRegistry()
    private let state = Mutex<State>(.idle)
    private let nextSessionID = Atomic<Int>(0)
    private let limiter: ConnectionLimiter
    /// How long shutdown waits for clients to receive `EVENT SHUTDOWN` before closing them anyway.
    private let shutdownGracePeriod: Duration
    /// What every session runs with (one for all of them; it holds how long an ended session's
    /// last lines may wait for a client that does not read them).
    private let environment: SessionEnvironment
    /// One task executor per event loop, for the sessions' commands.
    private let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])
    /// Pushes the store's events to the sessions, from ``bind()`` until ``run()`` ends.
    private let following = Mutex<EventSubscription?>(nil)

    /// One bound listening socket, the dialect it speaks and what its sessions know of their
    /// transport.
    private struct Listener: Sendable {
        var channel: any Channel
        var dialect: Dialect
        var security: TransportSecurity
        var address: SocketAddress { channel.localAddress! }
    }

    /// What a listener's connections speak.
    public enum Dialect: String, Sendable {
        case native
        case irc
    }

    private enum State {
        case idle
        /// The plaintext native listener first.
        case bound([Listener])
        case stopped
    }

    /// When the server was made (IRC's 003).
    private let startedAt = Date()

    public init(configuration: GatewayConfiguration, services: GatewayServices, logger: Logger,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                shutdownGracePeriod: Duration = .seconds(3), lingerTime: Duration = .seconds(5)) {
        self.configuration = configuration
        self.services = services
        self.logger = logger
        self.group = group
        self.shutdownGracePeriod = shutdownGracePeriod
        let limiter = ConnectionLimiter(maxTotal: configuration.limits.maxConnections,
                                        maxPerAddress: configuration.limits.maxConnectionsPerAddress,
                                        maxNewPerAddressPerMinute: configuration.limits.maxNewConnectionsPerAddressPerMinute)
        self.limiter = limiter
        self.environment = SessionEnvironment(table: .standard, services: services, limits: configuration.limits,
                                              registry: registry, logger: logger, lingerTime: lingerTime, limiter: limiter)
    }

    /// Binds the listening sockets (if not yet bound) and returns the plaintext one's address;
    /// with port 0 the system picks a free port. ``tlsAddress`` then has the TLS one's.
    ///
    /// Throws ``ConfigurationError`` for unusable TLS files and ``ListenError`` for a port that
    /// cannot be bound; either way nothing is left listening.
    @discardableResult
    public func bind() async throws -> SocketAddress {
        if case .bound(let listeners) = state.withLock({ $0 }) { return listeners[0].address }
        // Read the certificate before taking any port, so a bad file leaves nothing half-started.
        let tlsContext = configuration.tls.enabled ? try configuration.tls.makeServerContext() : nil
        // Follow the store's events before any session can cause one.
        let started = startFollowingEvents()
        var listeners: [Listener] = []
        do {
            // TLS first: the plaintext sessions must know its port (for `requireTLSForLogin`).
            var tls: Listener?
            var ircTLS: Listener?
            if let tlsContext {
                let security = TransportSecurity(isSecure: true)
                tls = try await listen(.native, host: configuration.tls.host, port: configuration.tls.port,
                                       keys: "tls.host, tls.port", tls: tlsContext, security: security)
                if configuration.irc.enabled {
                    ircTLS = try await listen(.irc, host: configuration.irc.host, port: configuration.irc.tlsPort,
                                              keys: "irc.host, irc.tlsPort", tls: tlsContext, security: security)
                }
            }
            let required = configuration.tls.requireTLSForLogin
            let security = TransportSecurity(isSecure: false, requiredTLSPort: required ? tls?.address.port : nil)
            listeners.append(try await listen(.native, host: configuration.listen.host, port: configuration.listen.port,
                                              keys: "listen.host, listen.port", tls: nil, security: security))
            listeners += [tls].compactMap(\.self)
            if configuration.irc.enabled {
                let security = TransportSecurity(isSecure: false, requiredTLSPort: required ? ircTLS?.address.port : nil)
                listeners.append(try await listen(.irc, host: configuration.irc.host, port: configuration.irc.port,
                                                  keys: "irc.host, irc.port", tls: nil, security: security))
            }
            listeners += [ircTLS].compactMap(\.self)
        } catch {
            for listener in listeners { try? await listener.channel.close() }
            if started { stopFollowingUnlessBound() }
            throw error
        }
        let bound = listeners
        let accepted = state.withLock { s -> Bool in
            guard case .idle = s else { return false }
            s = .bound(bound)
            // (A bind that ran at the same time, started following and failed may have stopped
            // it again; under the lock, so a failing bind sees `.bound` and leaves it alone.)
            startFollowingEvents()
            return true
        }
        guard accepted else {
            for listener in listeners { try? await listener.channel.close() }
            if started { stopFollowingUnlessBound() }
            throw ServerError.alreadyStopped
        }
        for listener in listeners {
            let address = listener.address
            logger.info("listening", metadata: ["address": "\(address.ipAddress ?? "?"):\(address.port ?? 0)",
                                                "tls": "\(listener.security.isSecure)", "dialect": "\(listener.dialect.rawValue)"])
        }
        return listeners[0].address
    }

    /// The address of a bound listener; nil while unbound or when it is not configured.
    public func address(_ dialect: Dialect, tls: Bool) -> SocketAddress? {
        guard case .bound(let listeners) = state.withLock({ $0 }) else { return nil }
        return listeners.first { $0.dialect == dialect && $0.security.isSecure == tls }?.address
    }

    /// The TLS listener's address once bound; nil while unbound or with TLS off.
    public var tlsAddress: SocketAddress? { address(.native, tls: true) }

    private func listen(_ dialect: Dialect, host: String, port: Int, keys: String, tls: NIOSSLContext?,
                        security: TransportSecurity) async throws -> Listener {
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                // Without this, `printf ... | nc -N` would get no replies: NIO would close on EOF.
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                // One bounded read per readiness: a session holds at most this much input past
                // the lines it reads ahead (SessionHandler.maximumPendingLines).
                .childChannelOption(.maxMessagesPerRead, value: 1)
                // NIO keeps each connection's receive buffer between reads and never shrinks it:
                // an idle session holds `initial` bytes, or what its largest read needed. Commands
                // are short; a client that sends more gets larger reads (the buffer grows after
                // each read that fills it, up to the maximum), so a TLS session keeps what its
                // handshake needed (about 0.5-2 KiB) and a bot that bursts keeps up to 4 KiB.
                .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(
                    minimum: 64, initial: 128, maximum: SessionHandler.maximumReadBytes))
                .childChannelInitializer { child in
                    child.eventLoop.makeCompletedFuture {
                        try self.accept(child, dialect: dialect, tls: tls, security: security)
                    }
                }
                .bind(host: host, port: port).get()
            return Listener(channel: channel, dialect: dialect, security: security)
        } catch {
            throw ListenError(host: host, port: port, keys: keys, underlying: error)
        }
    }

    /// Sets up one accepted connection: a session, or a refusal when it is over the limits.
    private func accept(_ child: any Channel, dialect: Dialect, tls: NIOSSLContext?, security: TransportSecurity) throws {
        let pipeline = child.pipeline.syncOperations
        if let tls {
            try pipeline.addHandler(NIOSSLServerHandler(context: tls))
            try pipeline.addHandler(TLSHandshakeLogger(logger: logger))
        }
        let address = child.remoteAddress?.ipAddress ?? "unknown"
        if let refusal = limiter.admit(address, now: .now) {
            logger.notice("connection refused", metadata: ["address": "\(address)", "reason": "\(refusal)"])
            let line = switch dialect {
            case .native: Outbox.encode(Session.refusal(refusal))
            case .irc: IRCConnection.line(for: .closing(code: "TOO_MANY_CONNECTIONS", text: Session.refusal(refusal).text ?? "")).encoded
            }
            try pipeline.addHandler(RefusalHandler(line, isSecure: security.isSecure))
            return
        }
        let id = nextSessionID.add(1, ordering: .relaxed).newValue
        var session = Session(id: id, environment: environment)
        session.remoteAddress = address
        session.security = security
        let speaker: any ConnectionDialect = switch dialect {
        case .native: NativeConnection(session)
        case .irc: IRCConnection(session: session, eventLoop: child.eventLoop, startedAt: startedAt)
        }
        try pipeline.addHandler(SessionHandler(session: session, dialect: speaker, channel: child,
                                               executor: executor(for: child.eventLoop)))
    }

    private func executor(for loop: any EventLoop) -> EventLoopTaskExecutor {
        executors.withLock { executors in
            if let executor = executors[ObjectIdentifier(loop)] { return executor }
            let executor = EventLoopTaskExecutor(loop)
            executors[ObjectIdentifier(loop)] = executor
            return executor
        }
    }

    /// Serves until shut down; no connection can fail the server. After shutdown, waits for the
    /// sessions to receive their notice, then closes what is left.
    public func run() async throws {
        try await bind()
        guard case .bound(let listeners) = state.withLock({ $0 }) else { return }
        defer { stopFollowingEvents() }
        try await withGracefulShutdownHandler {
            for listener in listeners { try await listener.channel.closeFuture.get() }
        } onGracefulShutdown: {
            self.shutdown()
        }
        // The listeners are closed (shutdown): the sessions were told; give stragglers a deadline.
        let deadline = ContinuousClock.now + shutdownGracePeriod
        while registry.count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        registry.abortAll()
        let closing = ContinuousClock.now + .seconds(5)
        while registry.count > 0, ContinuousClock.now < closing {
            try? await Task.sleep(for: .milliseconds(10))
        }
        logger.info("server stopped")
    }

    /// Pushes the store's committed events to the sessions, from the threads that commit them
    /// (no task or thread of its own: in issue #20 that saved about a sixth of the server's
    /// context switches; README, Performance, "Third pass"). Returns whether this call started it.
    @discardableResult
    private func startFollowingEvents() -> Bool {
        let (services, logger) = (self.services, self.logger)
        return following.withLock { following in
            guard following == nil else { return false }
            following = services.followEvents(logger: logger)
            return true
        }
    }

    /// A `bind()` that started following failed: it stops, unless another `bind()` at the same
    /// time bound the listeners.
    private func stopFollowingUnlessBound() {
        state.withLock { s in
            if case .bound = s { return }
            stopFollowingEvents()
        }
    }

    private func stopFollowingEvents() {
        following.withLock { following in
            defer { following = nil }
            return following
        }?.cancel()
    }

    /// Stops accepting and tells every session the server is going down. ``run()`` returns once
    /// the sessions are closed.
    public func shutdown() {
        let listeners = state.withLock { s -> [Listener] in
            defer { s = .stopped }
            if case .bound(let listeners) = s { return listeners }
            return []
        }
        logger.info("shutting down", metadata: ["sessions": "\(registry.count)"])
        registry.beginShutdown()
        for listener in listeners { listener.channel.close(promise: nil) }
    }

    /// Sessions currently connected.
    public var sessionCount: Int { registry.count }

    /// What each live session holds of its client's input (for tests).
    var inputMeters: [SharedMachine] { Array(registry.inputMeters.values) }

    enum ServerError: Error {
        case alreadyStopped
    }
}

/// A listening socket that could not be bound, naming the config keys that chose it.
public struct ListenError: Error, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// The config keys of the listener, e.g. `listen.host, listen.port`.
    public var keys: String
    public var underlying: any Error

    public var description: String {
        let reason = (underlying as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(underlying)"
        return "cannot listen on \(host):\(port) (\(keys)): \(reason)"
    }
}
