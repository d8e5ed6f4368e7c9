//! The server suite: one `pub fn` per case, taking the engine under test. Each case's doc comment
//! cites the PROTOCOL.md requirement ids it checks; together they cover every MUST a server must
//! meet in §§ 3–15 (the `coverage` test of this crate keeps it so).
//!
//! Every case starts its own server on its own temporary root, so cases run in parallel; load
//! stays small and on loopback. Deadlines are short (hundreds of milliseconds) where a case is
//! about a deadline, and every wait is bounded.

use std::time::{Duration, Instant};

mod auth;
mod capacity;
mod commands;
mod digests;
mod handshake;
mod legacy;
mod names;
mod shutdown;
mod storage;
mod tls;
mod trailer;

pub use auth::*;
pub use capacity::*;
pub use commands::*;
pub use digests::*;
pub use handshake::*;
pub use legacy::*;
pub use names::*;
pub use shutdown::*;
pub use storage::*;
pub use tls::*;
pub use trailer::*;

/// Expands to one `#[test]` per case of the suite, run against `$engine` (a
/// [`StartFn`](crate::StartFn)). Every case of [`crate::suite`] must be listed here (this crate's
/// tests check it).
#[macro_export]
macro_rules! server_suite {
    ($engine:expr) => {
        $crate::server_suite!(@cases $engine;
            // handshake
            hello_announces_version_role_capabilities_and_limits,
            version_range_chooses_the_highest_version_spoken,
            no_common_version_is_unsupported_version,
            malformed_hellos_are_refused_and_closed,
            announced_limits_stay_within_the_ceilings,
            requests_pipelined_behind_the_hello_are_answered,
            // auth
            tokens_grant_their_roles,
            unknown_token_is_unauthorized_without_fallback,
            anonymous_none_needs_a_token,
            read_role_may_not_put_delete_or_shut_down,
            write_role_may_not_shut_down,
            read_only_server_refuses_put_and_delete_for_every_role,
            errors_come_in_the_specified_order,
            // commands
            list_is_sorted_bytewise_with_digests,
            list_shows_only_regular_files_with_valid_names,
            stat_returns_the_entry_or_not_found,
            mtimes_are_the_storage_s_truncated_to_the_millisecond,
            get_sends_the_whole_file,
            get_resumes_from_any_offset,
            missing_files_are_not_found,
            put_honours_its_mode_and_reports_replacement,
            put_with_a_wrong_digest_stores_nothing,
            put_above_max_file_size_is_too_large_without_reading_data,
            refused_put_data_is_read_and_discarded,
            digests_are_accepted_in_either_case_and_sent_lowercase,
            empty_files_round_trip,
            delete_removes_the_file,
            status_reports_open_and_closed_connections,
            status_keeps_the_last_n_connections,
            help_answers_every_role,
            bye_replies_then_closes,
            unknown_opcodes_are_malformed_and_close,
            pipelined_requests_are_answered_in_order,
            requests_split_anywhere_are_read_the_same,
            fatal_error_reply_survives_unread_input,
            name_length_above_the_ceiling_is_too_large,
            length_fields_do_not_reserve_memory,
            // names
            traversal_names_are_bad_name_and_touch_nothing,
            control_characters_are_bad_name,
            empty_dot_reserved_and_invalid_utf8_names_are_bad_name,
            names_longer_than_max_name_len_are_bad_name,
            names_are_exact_byte_strings,
            symlinks_in_the_root_are_neither_listed_nor_served,
            stale_temporary_files_are_removed_at_start,
            // storage
            upload_cut_midway_leaves_nothing,
            upload_is_invisible_until_complete,
            racing_create_only_uploads_have_one_winner,
            racing_overwrites_leave_one_whole_upload,
            racing_overwrites_of_a_new_name_create_it_once,
            reads_during_replacement_see_one_whole_version,
            get_in_flight_completes_with_the_version_it_announced,
            get_of_a_file_truncated_mid_send_closes_the_connection,
            files_over_4_gib_are_listed_and_resumed,
            a_file_edited_in_place_with_its_mtime_set_back_gets_its_new_digest,
            gets_waiting_for_a_hash_do_not_hold_up_other_clients,
            start_up_leaves_a_directory_named_like_a_temporary_file,
            put_onto_a_directory_or_link_is_forbidden_and_replaces_nothing,
            a_directory_or_link_made_during_an_upload_is_not_replaced,
            a_put_that_fills_the_disk_is_storage_full_and_leaves_nothing,
            // digests that last
            digests_survive_a_restart,
            a_file_edited_while_the_server_was_down_gets_its_new_digest,
            files_are_hashed_in_the_background_before_anyone_asks,
            a_get_joins_the_hash_under_way,
            a_get_during_background_hashing_is_served_by_it,
            a_root_without_user_xattrs_keeps_digests_in_the_index,
            // capacity and deadlines
            clients_over_max_clients_get_busy,
            clients_over_the_per_address_limit_get_busy,
            handshake_deadline_closes_silent_and_slow_clients,
            idle_deadline_closes_quiet_connections,
            head_and_progress_deadlines_cut_a_trickling_client,
            clients_that_stop_reading_are_dropped,
            pipelined_requests_without_reading_are_held_back,
            pipelined_small_gets_reach_a_slow_reader_whole_and_in_order,
            // shutdown
            shutdown_by_an_admin_drains_the_server,
            shutdown_lets_an_upload_in_flight_finish,
            shutdown_grace_end_discards_an_unfinished_upload,
            shutdown_answers_half_hellos_and_drops_pipelined_requests,
            // legacy profile
            legacy_download_on_the_same_port,
            legacy_refusals_are_error_messages,
            legacy_name_longer_than_max_name_len_is_refused_unread,
            legacy_disabled_is_refused,
            legacy_without_anonymous_access_is_refused,
            // the trailing digest (§ 6.5)
            trailing_uploads_are_published_only_when_their_trailer_matches,
            a_fetch_of_a_large_unhashed_file_trails_its_digest,
            a_server_without_trailer_refuses_its_forms,
            a_trailing_reply_cut_by_a_shrinking_file_ends_without_a_trailer,
            // TLS (§ 18)
            tls_listener_serves_ferry_1_over_tls_1_3,
            tls_listener_refuses_other_protocols_and_old_versions,
            tls_listener_answers_a_plain_hello_with_at_most_an_alert,
            plain_listener_answers_a_tls_hello_with_malformed,
        );
    };
    (@cases $engine:expr; $($(#[$attr:meta])* $case:ident),* $(,)?) => {
        $(
            $(#[$attr])*
            #[test]
            fn $case() {
                $crate::suite::$case($engine)
            }
        )*
    };
}

/// A small file system of its own, mounted for the life of the value on a fresh temporary
/// directory: a tmpfs that fills up, or a ramfs, which has no user xattrs. Mounting needs root
/// (`CAP_SYS_ADMIN`); where it is refused, [`SmallFs::mount`] says why, and the case that wanted
/// one skips with the reason printed. It calls mount(2) itself rather than run mount(8): a child
/// forked while other cases run would hold their open files (and the index's lock) until it
/// execs.
pub(crate) struct SmallFs {
    /// The mount point, inside `dir`.
    path: std::path::PathBuf,
    /// Removed once the file system is unmounted.
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a file system of type `fstype` (`tmpfs`, `ramfs`) with `options`.
    pub(crate) fn mount(fstype: &str, options: &str) -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix("ferry-fs-").tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("root");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        Self::mount_on(&path, fstype, options).map_err(|e| format!("cannot mount a {fstype} (not root?): {e}"))?;
        Ok(Self { path, _dir: dir })
    }

    #[cfg(target_os = "linux")]
    fn mount_on(path: &std::path::Path, fstype: &str, options: &str) -> std::io::Result<()> {
        use rustix::mount::{mount, MountFlags};
        let options = std::ffi::CString::new(options).map_err(std::io::Error::other)?;
        mount(fstype, path, fstype, MountFlags::NOSUID | MountFlags::NODEV, options.as_c_str())?;
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn mount_on(_path: &std::path::Path, _fstype: &str, _options: &str) -> std::io::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    /// The mount point.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Detached: a server that still holds the root does not keep the mount in the tree.
        #[cfg(target_os = "linux")]
        let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
    }
}

/// A short deadline for the cases about deadlines.
pub(crate) const SHORT: Duration = Duration::from_millis(300);

/// How late a deadline may fire and still pass: the engine's timer granularity, thread
/// scheduling on a loaded test machine, and the loopback round trip.
pub(crate) const SLACK: Duration = Duration::from_millis(1500);

/// Asserts that `elapsed` lies in `[at - 50 ms, at + SLACK]`: the deadline `at` was applied, not
/// early and not much later.
#[track_caller]
pub(crate) fn assert_deadline(what: &str, elapsed: Duration, at: Duration) {
    assert!(
        elapsed + Duration::from_millis(50) >= at && elapsed <= at + SLACK,
        "{what}: closed after {elapsed:?}, the deadline is {at:?}"
    );
}

/// Sends `bytes` one at a time, one every `gap`, until the server says something or closes;
/// returns what it said (`None`: it closed without a word) and when it did, measured from the
/// first byte. The gaps are waits on the server's reply, not blind sleeps.
#[track_caller]
pub(crate) fn trickle(client: &mut crate::Client, bytes: &[u8], gap: Duration) -> (Option<crate::Reply>, Duration) {
    let start = Instant::now();
    for &b in bytes {
        if client.try_send_raw(&[b]).is_err() {
            break;
        }
        match client.next_item(Some(Instant::now() + gap)) {
            Err(crate::ReadError::Timeout) => continue,
            Ok(Some(crate::Item::Msg(first))) => {
                let elapsed = start.elapsed();
                let reply = crate::Reply { items: vec![first], ..Default::default() };
                return (Some(reply), elapsed);
            }
            Ok(None) | Err(crate::ReadError::Reset) => return (None, start.elapsed()),
            other => panic!("while trickling: {other:?}"),
        }
    }
    // Every byte sent, or the server stopped reading: wait for its word.
    match client.try_read_reply() {
        Ok(reply) => (Some(reply), start.elapsed()),
        Err(crate::ReadError::Closed | crate::ReadError::Reset) => (None, start.elapsed()),
        Err(e) => panic!("after trickling {} bytes: {e}", bytes.len()),
    }
}
