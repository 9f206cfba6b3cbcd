-- No hoarding (README, "Security"): a user holds at most BOOKINGS_PER_USER_PER_COURSE
-- live bookings (PENDING, AWAITING_PAYMENT) on a course. Each live booking takes one
-- numbered slot of its user and course; the primary key refuses a slot taken twice, so
-- two requests at once cannot both pass (no check-then-insert). A booking gives its slot
-- back the moment it reaches a final state, whichever function moved it there.
CREATE TABLE booking_slots (
    user_id    uuid    NOT NULL,
    course_id  uuid    NOT NULL,
    slot       integer NOT NULL CHECK (slot >= 1),
    booking_id uuid    NOT NULL UNIQUE,
    PRIMARY KEY (user_id, course_id, slot)
);

CREATE FUNCTION release_booking_slot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM booking_slots WHERE booking_id = NEW.booking_id;
    RETURN NEW;
END
$$;

CREATE TRIGGER bookings_release_slot AFTER UPDATE OF status ON bookings
    FOR EACH ROW WHEN (NEW.status IN ('CONFIRMED', 'REJECTED', 'CANCELLED', 'EXPIRED'))
    EXECUTE FUNCTION release_booking_slot();
