import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The TCP listener: accepts connections and runs one ``Session`` per connection.
///
/// Run it in a `ServiceGroup` (the `deskline serve` command does): on SIGTERM/SIGINT it stops
/// accepting, sends every session `EVENT SHUTDOWN`, gives them a moment to receive it, and
/// returns. Tests call ``bind()`` to learn the port and ``shutdown()`` to stop it.
public final class GatewayServer: Service, Sendable {
    typealias ServerChannel = NIOAsyncChannel<NIOAsyncChannel<LineFrame, ByteBuffer>, Never>

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
    /// How long an ended session's last lines may wait for a client that does not read them.
    private let lingerTime: Duration

    private enum State {
        case idle
        case bound(ServerChannel)
        case stopped
    }

    public init(configuration: GatewayConfiguration, services: GatewayServices, logger: Logger,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                shutdownGracePeriod: Duration = .seconds(3), lingerTime: Duration = .seconds(5)) {
        self.configuration = configuration
        self.services = services
        self.logger = logger
        self.group = group
        self.shutdownGracePeriod = shutdownGracePeriod
        self.lingerTime = lingerTime
        self.limiter = ConnectionLimiter(maxTotal: configuration.limits.maxConnections,
                                         maxPerAddress: configuration.limits.maxConnectionsPerAddress,
                                         maxNewPerAddressPerMinute: configuration.limits.maxNewConnectionsPerAddressPerMinute)
    }

    /// Binds the listening socket (if not yet bound) and returns its address; with port 0 the
    /// system picks a free port.
    @discardableResult
    public func bind() async throws -> SocketAddress {
        if case .bound(let channel) = state.withLock({ $0 }) { return channel.channel.localAddress! }
        let maxLine = configuration.limits.maxLineBytes
        let channel: ServerChannel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Without this, `printf ... | nc -N` would get no replies: NIO would close on EOF.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: configuration.listen.host, port: configuration.listen.port) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(LineFrameDecoder(maximumLineBytes: maxLine)))
                    return try NIOAsyncChannel<LineFrame, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        let accepted = state.withLock { s -> Bool in
            guard case .idle = s else { return false }
            s = .bound(channel)
            return true
        }
        guard accepted else {
            try? await channel.channel.close()
            throw ServerError.alreadyStopped
        }
        let address = channel.channel.localAddress!
        logger.info("listening", metadata: ["address": "\(address.ipAddress ?? "?"):\(address.port ?? 0)"])
        return address
    }

    /// Serves until shut down. Each connection runs in its own child task; none can fail the server.
    public func run() async throws {
        try await bind()
        guard case .bound(let channel) = state.withLock({ $0 }) else { return }
        try await withGracefulShutdownHandler {
            try await channel.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { tasks in
                    for try await connection in inbound {
                        let id = nextSessionID.add(1, ordering: .relaxed).newValue
                        var session = Session(id: id, table: .standard, services: services, limits: configuration.limits,
                                              registry: registry, logger: logger, lingerTime: lingerTime)
                        let address = connection.channel.remoteAddress?.ipAddress ?? "unknown"
                        session.remoteAddress = address
                        let limiter = self.limiter
                        let logger = self.logger
                        tasks.addTask {
                            if let refusal = limiter.admit(address, now: .now) {
                                logger.notice("connection refused", metadata: ["address": "\(address)", "reason": "\(refusal)"])
                                await Session.refuse(connection, refusal)
                                return
                            }
                            defer { limiter.release(address) }
                            await session.run(connection)
                        }
                    }
                    // Listener closed (shutdown): the sessions were told; give stragglers a deadline.
                    let registry = self.registry
                    let grace = shutdownGracePeriod
                    tasks.addTask {
                        let deadline = ContinuousClock.now + grace
                        while registry.count > 0, ContinuousClock.now < deadline {
                            try? await Task.sleep(for: .milliseconds(20))
                        }
                        registry.abortAll()
                    }
                }
            }
        } onGracefulShutdown: {
            self.shutdown()
        }
        logger.info("server stopped")
    }

    /// Stops accepting and tells every session the server is going down. ``run()`` returns once
    /// the sessions are closed.
    public func shutdown() {
        let channel = state.withLock { s -> ServerChannel? in
            defer { s = .stopped }
            if case .bound(let c) = s { return c }
            return nil
        }
        logger.info("shutting down", metadata: ["sessions": "\(registry.count)"])
        registry.beginShutdown()
        channel?.channel.close(promise: nil)
    }

    /// Sessions currently connected.
    public var sessionCount: Int { registry.count }

    enum ServerError: Error {
        case alreadyStopped
    }
}
