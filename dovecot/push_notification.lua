-- Dovecot push_notification_lua script of a chatmail relay: each new
-- message sets the /private/messagenew attribute, which Dovecot passes to
-- chatmail-metadata (mail_attribute_dict), which notifies the recipient's
-- devices. Copies of a user's own messages (sent to their other devices)
-- trigger no notification.

function dovecot_lua_notify_begin_txn(user)
  return user
end

function dovecot_lua_notify_event_message_new(user, event)
  local sender = string.lower(event.from_address or "")
  if sender == string.lower(user.username) then
    return
  end
  local mailbox = user:mailbox(event.mailbox)
  mailbox:sync()
  mailbox:metadata_set("/private/messagenew", "1")
  mailbox:free()
end

function dovecot_lua_notify_end_txn(ctx, success)
end
