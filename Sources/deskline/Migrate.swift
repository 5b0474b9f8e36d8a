import ArgumentParser
import DesklineCore
import DesklinePostgres
import Logging

extension Deskline {
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or upgrade the PostgreSQL schema (storage.backend \"postgres\").",
            discussion: """
            Applies, in order and each in its own transaction, the schema migrations the database \
            lacks (docs/STORAGE.md, "PostgreSQL"). Safe to run again, and from several nodes at \
            once (they take turns). `serve` refuses a schema that is missing, older or newer than \
            its own version. The file store needs no migration.
            """)

        @OptionGroup var options: DataOptions

        func run() async throws {
            let configuration = try options.loadConfiguration()
            guard configuration.storage.backend == .postgres else {
                print("Nothing to migrate: storage.backend is \"\(configuration.storage.backend.rawValue)\" (the file store needs no migration).")
                return
            }
            let settings = configuration.storage.postgres
            var logger = Logger(label: "deskline.migrate")
            logger.logLevel = .warning
            let applied = try await settings.migrate(password: try settings.password(), logger: logger)
            let place = "\(settings.serverDescription) schema '\(settings.schema)'"
            if applied.isEmpty {
                print("The schema in \(place) is already at version \(Schema.current); nothing to do.")
            } else {
                for version in applied {
                    let summary = Schema.migrations.first { $0.version == version }?.summary ?? ""
                    print("Applied migration \(version): \(summary)")
                }
                print("The schema in \(place) is now at version \(Schema.current).")
            }
        }
    }
}
