import DesklineCore
import Synchronization
import Testing

struct KeyedSerializerTests {
    /// Counts how many bodies run at once, and the most ever seen.
    final class Gauge: Sendable {
        private let state = Mutex((active: 0, peak: 0, order: [Int]()))
        func enter() { state.withLock { $0.active += 1; $0.peak = max($0.peak, $0.active) } }
        func leave(_ id: Int) { state.withLock { $0.active -= 1; $0.order.append(id) } }
        var peak: Int { state.withLock { $0.peak } }
        var order: [Int] { state.withLock { $0.order } }
    }

    @Test func sameKeyRunsOneAtATime() async throws {
        let serializer = KeyedSerializer<String>()
        let gauge = Gauge()
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<20 {
                group.addTask {
                    await serializer.run("ticket") {
                        gauge.enter()
                        try? await Task.sleep(for: .milliseconds(2))
                        gauge.leave(i)
                    }
                }
            }
        }
        #expect(gauge.peak == 1)
        #expect(gauge.order.sorted() == Array(0..<20))
    }

    @Test func waitersRunInArrivalOrder() async throws {
        let serializer = KeyedSerializer<String>()
        let gauge = Gauge()
        // Hold the key, queue three waiters one after another, then release.
        let (gate, open) = AsyncStream.makeStream(of: Void.self)
        let holder = Task { await serializer.run("k") { for await _ in gate { break } } }
        try await Task.sleep(for: .milliseconds(50))
        var waiters: [Task<Void, Never>] = []
        for i in 1...3 {
            waiters.append(Task { await serializer.run("k") { gauge.enter(); gauge.leave(i) } })
            try await Task.sleep(for: .milliseconds(50))
        }
        open.yield()
        await holder.value
        for w in waiters { await w.value }
        #expect(gauge.order == [1, 2, 3])
    }

    @Test func differentKeysRunConcurrently() async throws {
        let serializer = KeyedSerializer<Int>()
        let gauge = Gauge()
        await withTaskGroup(of: Void.self) { group in
            for key in 0..<4 {
                group.addTask {
                    await serializer.run(key) {
                        gauge.enter()
                        try? await Task.sleep(for: .milliseconds(100))
                        gauge.leave(key)
                    }
                }
            }
        }
        #expect(gauge.peak > 1)
    }

    @Test func anErrorReleasesTheKey() async throws {
        struct Boom: Error {}
        let serializer = KeyedSerializer<String>()
        await #expect(throws: Boom.self) { try await serializer.run("k") { () throws(Boom) in throw Boom() } }
        #expect(await serializer.run("k") { 42 } == 42)
    }
}
