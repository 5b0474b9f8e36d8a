#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import DesklineCore
import Foundation
import Logging

/// One all-or-nothing change to account files (tenants, customers, users, counters and the
/// email and login indexes), made by whoever holds `accounts.lock` (server or admin CLI).
///
/// 1. The intent, `accounts.pending` at the data directory's root, is written and synced: the
///    directories the change creates, and each file it writes or removes with the inode of the
///    version it replaces (none for a new file).
/// 2. The directories are made. For each file in order: its current version is kept by a hard
///    link, `<file>.before`, and the link synced; then the file is replaced (temp file, fsync,
///    rename, directory fsync) or removed.
/// 3. Commit: the intent is removed and the root synced. The kept versions are removed after.
///
/// Any failure before the commit is undone at once (``undo(_:)``): kept versions are renamed
/// back, new files and directories removed, each directory synced, and then the intent removed.
/// Undoing needs no free space (renames and unlinks only). If the undo fails too, or the process
/// dies, the intent stays, and the next account change, the server's start, `deskline check
/// --repair` and the reads LOGIN relies on (when nobody holds the lock) undo it first
/// (``recover()``). A failure of the root's sync after the intent was removed is undone the same
/// way once the intent is written again; if it cannot be, the complete change is kept.
///
/// A kept version counts only if it is the very inode the intent names: one left over by an
/// earlier, committed change (its removal after the commit is not synced) is never renamed back.
/// Without an intent, kept versions are leftovers of committed changes.
struct AccountTransaction {
    static let intentName = "accounts.pending"
    /// Suffix of an old version kept while a change is under way (not `.json`, so no reader
    /// takes it for a record, and not the temp prefix, so no sweep removes it).
    static let keptSuffix = ".before"

    /// What `accounts.pending` holds. Paths are relative to the data directory.
    struct Intent: Codable, Equatable {
        struct File: Codable, Equatable {
            var path: String
            /// The inode of the version the change replaces or removes; nil for a new file.
            var inode: UInt64?
        }

        /// Directories the change creates, parents first.
        var directories: [String]
        var files: [File]
    }

    /// A file the change writes (`data`) or removes (nil).
    struct Write {
        var path: String
        var data: Data?
    }

    struct DamagedIntent: Error, CustomStringConvertible {
        var description: String
    }

    let root: String
    let faults: FaultInjection?
    let logger: Logger

    var intentPath: String { root + "/" + Self.intentName }

    /// Makes `writes` (in this order; readers may see each file change as it is written) and
    /// creates `directories` (and missing parents of the files), all or nothing. Call holding
    /// `accounts.lock`, after ``recover()``.
    func commit(_ writes: [Write], creating directories: [String] = []) throws {
        // Never over an interrupted change's intent (it would lose what that change must undo).
        if try Self.inode(intentPath) != nil {
            throw DurableFile.IOError(operation: "write (an interrupted account change is not undone yet)", path: intentPath, errno: EEXIST)
        }
        var files: [(write: Write, inode: UInt64?)] = []
        for write in writes {
            let inode = try Self.inode(write.path)
            // Removing what is not there changes nothing.
            if write.data != nil || inode != nil { files.append((write, inode)) }
        }
        var missing: [String] = []
        func addMissing(_ dir: String) {
            guard !missing.contains(dir), dir.hasPrefix(root + "/"), !DurableFile.isDirectory(dir) else { return }
            addMissing(Self.parent(dir))
            missing.append(dir)
        }
        for dir in directories + files.filter({ $0.write.data != nil }).map({ Self.parent($0.write.path) }) { addMissing(dir) }
        if files.isEmpty && missing.isEmpty { return }
        let intent = Intent(directories: missing.map(relative),
                            files: files.map { Intent.File(path: relative($0.write.path), inode: $0.inode) })
        var intentWritten = false
        do {
            try DurableFile.replace(intentPath, with: Self.encode(intent), faults: faults)
            intentWritten = true
            for dir in missing { try DurableFile.makeDirectories(dir, faults: faults) }
            for (write, inode) in files {
                if inode != nil {
                    let kept = write.path + Self.keptSuffix
                    try DurableFile.remove(kept, faults: faults)
                    try faults?.check(.link, write.path)
                    guard link(write.path, kept) == 0 else { throw DurableFile.IOError(operation: "link", path: kept, errno: errno) }
                    try DurableFile.syncDirectory(Self.parent(write.path), faults: faults)
                }
                if let data = write.data {
                    try DurableFile.replace(write.path, with: data, faults: faults)
                } else {
                    try DurableFile.remove(write.path, faults: faults)
                    try DurableFile.syncDirectory(Self.parent(write.path), faults: faults)
                }
            }
            try DurableFile.remove(intentPath, faults: faults)
            try DurableFile.syncDirectory(root, faults: faults)
        } catch {
            // Past the commit point (the intent is removed; the sync of its directory failed): the
            // intent is written again before the undo, so an undo that fails too is still undone
            // later. If it cannot be written, the change stays whole: its complete new state is
            // consistent, and an undo without an intent could leave it half undone for good.
            if intentWritten, (try? Self.inode(intentPath)) == nil {
                do {
                    try DurableFile.replace(intentPath, with: Self.encode(intent), faults: faults)
                } catch let intentError {
                    logger.error("an account change failed after its commit, and its intent could not be written again to undo it: the change is kept (complete)",
                                 metadata: ["error": "\(error)", "intentError": "\(intentError)"])
                    removeKeptVersions(files)
                    throw DesklineError.storage(Self.keptWhole)
                }
            }
            do {
                try undo(intent)
            } catch let undoError {
                logger.error("an account change failed and could not be undone; the next account change, the server's start or `deskline check --repair` undoes it",
                             metadata: ["error": "\(error)", "undoError": "\(undoError)"])
            }
            throw error
        }
        removeKeptVersions(files)
    }

    /// What the caller of a change that failed past its commit point, and could not be undone, hears.
    static let keptWhole = "the change was made, but the store could not confirm that it is on disk"

    /// After a commit: the kept versions are leftovers (their removal is not synced, see above).
    private func removeKeptVersions(_ files: [(write: Write, inode: UInt64?)]) {
        for (write, inode) in files where inode != nil {
            _ = try? DurableFile.remove(write.path + Self.keptSuffix)
        }
    }

    /// The intent of an interrupted change, if there is one.
    func pending() throws -> Intent? {
        guard let data = try DurableFile.read(intentPath) else { return nil }
        let intent: Intent
        do {
            intent = try JSONDecoder().decode(Intent.self, from: data)
        } catch {
            throw DamagedIntent(description: "\(intentPath) cannot be parsed (\(error))")
        }
        // Only ever paths inside the data directory.
        for path in intent.directories + intent.files.map(\.path) {
            let parts = path.split(separator: "/", omittingEmptySubsequences: false)
            if path.hasPrefix("/") || parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) {
                throw DamagedIntent(description: "\(intentPath) names \(path), which is not a path inside the data directory")
            }
        }
        return intent
    }

    /// Undoes an interrupted change; returns its intent (nil if there was none).
    func recover() throws -> Intent? {
        guard let intent = try pending() else { return nil }
        try undo(intent)
        logger.notice("undid an interrupted account change", metadata: ["files": "\(intent.files.map(\.path).joined(separator: " "))"])
        return intent
    }

    /// Puts back what `intent` lists, newest file first (so readers never see a login index entry
    /// without its user), syncs every directory involved, and then removes the intent. Every step
    /// is tried even if one fails; on a failure the intent stays (it is written again if the
    /// failure came after the commit removed it) and the first error is thrown. Repeating it is
    /// harmless.
    func undo(_ intent: Intent) throws {
        var firstError: (any Error)?
        func attempt(_ body: () throws -> Void) {
            do { try body() } catch { if firstError == nil { firstError = error } }
        }
        var directories: [String] = []
        for file in intent.files.reversed() {
            let path = absolute(file.path)
            let kept = path + Self.keptSuffix
            attempt {
                if let inode = file.inode {
                    let keptInode = try Self.inode(kept)
                    if keptInode == inode {
                        try faults?.check(.rename, path)
                        guard rename(kept, path) == 0 else { throw DurableFile.IOError(operation: "rename", path: kept, errno: errno) }
                    }
                    // Still there if it was the same file as `path` (rename does nothing then), or
                    // a leftover of an earlier change (this one never got to the file).
                    if keptInode != nil { try DurableFile.remove(kept, faults: faults) }
                } else {
                    try DurableFile.remove(path, faults: faults)
                }
            }
            if !directories.contains(Self.parent(path)) { directories.append(Self.parent(path)) }
        }
        // Every directory is synced, changed now or not: an earlier undo may have made the
        // change without syncing it.
        for dir in directories where DurableFile.isDirectory(dir) {
            attempt { try DurableFile.syncDirectory(dir, faults: faults) }
        }
        for dir in intent.directories.reversed().map(absolute) where DurableFile.isDirectory(dir) {
            attempt {
                // Temp files of a replace the process did not live to clean up.
                for name in try DurableFile.list(dir) where name.hasPrefix(DurableFile.tempPrefix) {
                    try DurableFile.remove(dir + "/" + name, faults: faults)
                }
                // A directory something else has put a file into since is left (not ours alone).
                if rmdir(dir) != 0 && errno != ENOTEMPTY && errno != EEXIST {
                    throw DurableFile.IOError(operation: "rmdir", path: dir, errno: errno)
                }
                try DurableFile.syncDirectory(Self.parent(dir), faults: faults)
            }
        }
        if let firstError {
            if (try? Self.inode(intentPath)) == nil {
                do {
                    try DurableFile.replace(intentPath, with: Self.encode(intent), faults: faults)
                } catch {
                    logger.error("an undo failed, and its account change's intent could not be written again: a person must compare the files it names with their kept versions (*.before)",
                                 metadata: ["files": "\(intent.files.map(\.path).joined(separator: " "))", "error": "\(error)"])
                }
            }
            throw firstError
        }
        try DurableFile.remove(intentPath, faults: faults)
        try DurableFile.syncDirectory(root, faults: faults)
    }

    private func relative(_ path: String) -> String {
        precondition(path.hasPrefix(root + "/"), "an account file outside the data directory: \(path)")
        return String(path.dropFirst(root.count + 1))
    }

    private func absolute(_ path: String) -> String { root + "/" + path }

    private static func parent(_ path: String) -> String { (path as NSString).deletingLastPathComponent }

    private static func encode(_ intent: Intent) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(intent) + Data("\n".utf8)
    }

    /// The inode of `path`, nil if there is no such file.
    static func inode(_ path: String) throws -> UInt64? {
        var info = stat()
        if lstat(path, &info) == 0 { return UInt64(info.st_ino) }
        if errno == ENOENT { return nil }
        throw DurableFile.IOError(operation: "stat", path: path, errno: errno)
    }
}
