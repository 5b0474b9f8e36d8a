import DesklineCore
import Foundation

// Recovery after an unclean stop (kill -9, power loss), one tenant at a time and lazily: start-up
// does not read the data, each tenant is checked before its writer's first batch, and
// `recoverAllTenants` walks the rest in the background. The cost is one short read per log of
// the tenant (its last line) plus its customer indexes, never the logs' whole content.

extension FileStore {
    /// Removes leftover temp files of interrupted atomic replaces in `dir` (they were never
    /// renamed, so they never were the current content). Call holding `accounts.lock` where the
    /// admin CLI may be writing.
    func sweepTemporaryFiles(in dir: String) {
        for name in (try? DurableFile.list(dir)) ?? [] where name.hasPrefix(DurableFile.tempPrefix) {
            if unlink(dir + "/" + name) == 0 {
                logger.notice("removed the temp file of an interrupted write", metadata: ["path": "\(dir)/\(name)"])
            }
        }
    }

    /// Makes one tenant's files consistent again after an unclean stop: removes temp files, cuts
    /// torn last lines of every log, and adds index lines a crash kept from being written (a
    /// ticket or call is logged before its customer's index line). Runs inside the tenant's writer,
    /// so no write of the tenant runs meanwhile. Errors are logged; the tenant stays usable
    /// (readers skip torn lines and the next append cuts them anyway).
    func recoverTenant(_ tenant: TenantID) {
        let dir = tenantDir(tenant)
        do {
            try FileLock.with(accountsLock) {
                for sub in ["", "/users", "/customers", "/customer-emails"] { sweepTemporaryFiles(in: dir + sub) }
            }
            var cut = 0
            for sub in ["/tickets", "/calls", "/customer-tickets", "/customer-calls", "/inbox", "/events"] {
                for name in try DurableFile.list(dir + sub) where name.hasSuffix(".jsonl") {
                    let path = dir + sub + "/" + name
                    let bytes = try DurableFile.cutTornTail(path)
                    if bytes > 0 {
                        cut += 1
                        logger.notice("cut the torn last line of a log (an unfinished write, never acknowledged)",
                                      metadata: ["path": "\(path)", "bytes": "\(bytes)"])
                    }
                }
            }
            // A log whose first line never became durable holds no ticket: remove it (its number
            // was never acknowledged). Then the indexes must list exactly the tickets and calls.
            var fixed = 0
            let tickets = try ownedLogs(ticketsDir(tenant)) { try lastLine(TicketLogLine.self, $0, uncommitted: true)?.ticket.customerId }
            fixed += try reconcileIndexes(tickets, dir: dir + "/customer-tickets", index: { customerTicketsFile($0, tenant) },
                                          number: { (line: TicketRef) in line.ticket.number }, line: { TicketRef(ticket: TicketID($0)) })
            let calls = try ownedLogs(callsDir(tenant)) { try lastLine(CallRequest.self, $0, uncommitted: true)?.customerId }
            fixed += try reconcileIndexes(calls, dir: dir + "/customer-calls", index: { customerCallsFile($0, tenant) },
                                          number: { (line: CallRef) in line.call.number }, line: { CallRef(call: CallID($0)) })
            if fixed > 0 { ticketIndexCache.withLock { $0.changed(nil) } }
            if cut + fixed > 0 {
                logger.notice("recovered a tenant after an unclean stop",
                              metadata: ["tenant": "\(tenant)", "tornLinesCut": "\(cut)", "indexesRewritten": "\(fixed)"])
            }
        } catch {
            recoveryFailed.store(true, ordering: .relaxed)
            logger.error("recovery of a tenant failed", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
        }
    }

    /// Each `<n>.jsonl` log in `dir` with the customer it belongs to; logs without a complete
    /// line are removed.
    private func ownedLogs(_ dir: String, owner: (String) throws -> CustomerID?) throws -> [CustomerID: Set<Int>] {
        var owners: [CustomerID: Set<Int>] = [:]
        for n in try logNumbers(in: dir) {
            let path = dir + "/\(n).jsonl"
            do {
                if let customer = try owner(path) {
                    owners[customer, default: []].insert(n)
                } else if unlink(path) == 0 {
                    // No complete line at all (the torn tail was cut above).
                    logger.notice("removed a log whose first write never finished", metadata: ["path": "\(path)"])
                }
            } catch {
                // A damaged log is left as it is for the operator (`deskline check`); the rest
                // of the tenant is still recovered.
                recoveryFailed.store(true, ordering: .relaxed)
                logger.error("recovery skipped a damaged log", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
        return owners
    }

    /// Rewrites each customer index in `dir` that does not list exactly that customer's numbers;
    /// returns how many were rewritten.
    private func reconcileIndexes<Line: Codable>(_ owners: [CustomerID: Set<Int>], dir: String, index: (CustomerID) -> String,
                                                 number: (Line) -> Int, line: (Int) -> Line) throws -> Int {
        // A damaged index is rewritten from the logs like a stale one.
        let stale = try staleIndexes(owners, dir: dir, index: index, read: { try? readLines(Line.self, $0).map(number) }, line: line)
        for (_, path, lines) in stale {
            try rewriteIndex(lines, path)
            logger.notice("rewrote an index that did not match its logs", metadata: ["path": "\(path)"])
        }
        return stale.count
    }

    /// The customer indexes in `dir` that do not list exactly each customer's numbers in
    /// `owners` (counting a missing index of a customer who owns logs), each with the lines it
    /// should hold. `read` gives an index's numbers, nil if it cannot be read. Shared by recovery
    /// and `deskline check`.
    func staleIndexes<Line>(_ owners: [CustomerID: Set<Int>], dir: String, index: (CustomerID) -> String,
                            read: (String) -> [Int]?, line: (Int) -> Line) throws -> [(customer: CustomerID, path: String, lines: [Line])] {
        var customers = Set(owners.keys)
        for name in try DurableFile.list(dir) where name.hasSuffix(".jsonl") {
            if let customer = CustomerID(rawValue: String(name.dropLast(6))) { customers.insert(customer) }
        }
        return customers.sorted { $0.rawValue < $1.rawValue }.compactMap { customer in
            let path = index(customer)
            let expected = owners[customer] ?? []
            if let listed = read(path), Set(listed) == expected, listed.count == expected.count { return nil }
            return (customer, path, expected.sorted().map(line))
        }
    }

    /// Recovers every tenant not yet recovered (each through its writer). Start it in the
    /// background after an unclean stop, so tenants nobody uses are made whole too.
    public func recoverAllTenants() async {
        guard recoveryNeeded else { return }
        let names = (try? await io { try DurableFile.list(self.root + "/tenants").sorted() }) ?? []
        for name in names {
            guard let tenant = TenantID(rawValue: name) else { continue }
            try? await writer(tenant).write { _, _ in }
        }
        logger.notice("recovery after an unclean stop finished", metadata: ["tenants": "\(names.count)"])
    }

    /// Ticket, call and inbox writes so far, and the group commits (rounds of fsyncs) they
    /// took: with concurrent writers there are many writes per commit.
    public func writeStatistics() -> (writes: Int, commits: Int) {
        writers.withLock { writers in
            writers.values.reduce((0, 0)) { ($0.0 + $1.jobs.load(ordering: .relaxed), $0.1 + $1.batches.load(ordering: .relaxed)) }
        }
    }

    /// Whether a recovery could not finish (then the next start must recover again).
    public var recoveryIncomplete: Bool { recoveryFailed.load(ordering: .relaxed) }

    /// Syncs every tenant's logs and empties its journal (for a clean stop, after the last
    /// write: the next start has nothing to replay). False if a checkpoint failed.
    public func checkpointAll() async -> Bool {
        let writers = self.writers.withLock { Array($0.values) }
        var ok = true
        for writer in writers {
            do {
                try await io { try writer.checkpoint() }
            } catch {
                ok = false
            }
        }
        return ok
    }

    /// Waits until no tenant's writer has work (for a clean stop); false if that took longer
    /// than `timeout`.
    public func waitUntilWritesFinish(timeout: Duration = .seconds(10)) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while writers.withLock({ $0.values.contains { $0.isBusy } }) {
            if clock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }
}
