import DesklineProtocol
import Synchronization

/// The live sessions, so shutdown can reach every one of them.
final class SessionRegistry: Sendable {
    private struct State {
        var sessions: [Int: Outbox] = [:]
        var shuttingDown = false
    }

    private let state = Mutex(State())

    /// Registers a session; false once shutdown has begun.
    func add(_ id: Int, _ outbox: Outbox) -> Bool {
        state.withLock { s in
            guard !s.shuttingDown else { return false }
            s.sessions[id] = outbox
            return true
        }
    }

    func remove(_ id: Int) {
        _ = state.withLock { $0.sessions.removeValue(forKey: id) }
    }

    var count: Int { state.withLock { $0.sessions.count } }

    /// Tells every session the server is going down and lets it finish writing.
    func beginShutdown(_ line: ServerLine) {
        let outboxes = state.withLock { s in
            s.shuttingDown = true
            return Array(s.sessions.values)
        }
        for outbox in outboxes {
            outbox.send(line)
            outbox.finish()
        }
    }

    /// Closes whatever is still open (clients that did not read their last lines in time).
    func abortAll() {
        let outboxes = state.withLock { Array($0.sessions.values) }
        for outbox in outboxes { outbox.abort() }
    }
}
