import Synchronization

/// The live sessions, so shutdown can reach every one of them.
final class SessionRegistry: Sendable {
    /// What the registry needs of a session.
    struct Handle: Sendable {
        var outbox: Outbox
        var machine: SharedMachine
        /// Renders what the session is told when the server stops.
        var dialect: any ConnectionDialect
    }

    private struct State {
        var sessions: [Int: Handle] = [:]
        var shuttingDown = false
    }

    private let state = Mutex(State())

    /// Registers a session; false once shutdown has begun.
    func add(_ id: Int, _ handle: Handle) -> Bool {
        state.withLock { s in
            guard !s.shuttingDown else { return false }
            s.sessions[id] = handle
            return true
        }
    }

    func remove(_ id: Int) {
        _ = state.withLock { $0.sessions.removeValue(forKey: id) }
    }

    var count: Int { state.withLock { $0.sessions.count } }

    /// What each live session holds of its client's input (in its machine: ``SharedMachine/input``).
    var inputMeters: [Int: SharedMachine] { state.withLock { $0.sessions.mapValues(\.machine) } }

    /// Tells every session the server is going down and lets it finish writing. A session in
    /// the middle of a command answers it first and then sends the notice itself.
    func beginShutdown() {
        let handles = state.withLock { s in
            s.shuttingDown = true
            return Array(s.sessions.values)
        }
        for handle in handles where handle.machine.state.withLock({ $0.requestShutdown() }) {
            handle.outbox.send(handle.dialect.notice(.shuttingDown))
            handle.outbox.finish()
        }
    }

    /// Closes whatever is still open (clients that did not read their last lines in time).
    func abortAll() {
        let handles = state.withLock { Array($0.sessions.values) }
        for handle in handles { handle.outbox.abort() }
    }
}
