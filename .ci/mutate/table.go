package main

// table holds the mutations that .ci/mutants checks: at least one per
// guarantee of SPEC.md (G1-G11), one per mechanism that keeps it, the
// promises of the drop-in layer (C: bitswapcompat, MIGRATION.md), of the
// observers (obs: observe.go, metrics.go) and of the API's docs that no
// guarantee names (API: a message is its receiver's, ResponseMessage). Each
// is a subtle change that builds, not a crash or a Publish that does
// nothing. run names the narrowest tests that catch it, so that the whole
// table fits in CI's budget; a mutation that makes them hang rather than
// fail gets a short timeout. old must occur
// exactly once in file: when the code it names changes, the entry fails as
// anchor-missing and must be rewritten, not dropped. Texts are Go source as
// it stands, tabs included. Where no test caught an entry, a test was
// written for it (TestSubscribeOne_WaitsForAPublishInItsPutMany,
// TestBadInput_NilBlockFirstIsRefused,
// TestRemove_AgainAfterItsIDIsReusedLeavesTheNewOne,
// TestMetrics_RefreshThatFindsAnotherUnderWayIsTakenUp,
// TestPubSub_ContextEndClosesTheChannelOnceTheCallHasLeft,
// TestSIM_FilteredSetsAreApart, TestCancel_FunctionOwnsTheKeysItGets,
// TestMessage_AppendWritesIntoNoOtherMessage,
// TestFetch_CheckOfCloseBeforePeekDoesNotLetItThrough,
// TestStaleKeys_OwnHitsNextToOneStaleEntryKeepTheLiveWant,
// TestBadInput_UndefinedCidAnywhereIsRefused, TestQueue_HoldsOnlyWhatIsQueued,
// a Fetch in TestMetrics_WorkloadAsPrometheusShowsIt and a NewRequest in
// TestRequest_EndedByClose).
var table = []mutation{
	// G1: no lost wakeup.
	{
		id: "g1-peek-ignores-reservation", g: "G1", file: "interest_index.go",
		old: `	if x.res.get(k) != nil {
		return false
	}
	return x.wants[k] == nil`,
		new: `	return x.wants[k] == nil`,
		pkg: ".", run: `^TestSubscribeOne_WaitsForAPublishInItsPutMany$`,
		why: "a one-key Subscribe skips the reservations of a Publish in its PutMany, records its want after that Publish planned, and never gets the block",
	},
	{
		id: "g1-relock-ignores-version", g: "G1", file: "shard_read.go",
		old: `	if x.idx.version(k) != ver {
		x.mu.Unlock()
		return false`,
		new: `	if x.idx.version(k) < ver {
		x.mu.Unlock()
		return false`,
		pkg: ".", run: `^TestSubscribeOne_PublishDuringTheGet$`,
		why: "a one-key Subscribe whose Get missed records its want although a Publish stored and committed the key during the Get",
	},
	{
		id: "g1-publish-reserves-nothing", g: "G1", file: "shard.go",
		old: `			n.shards[o.keyShards[i]].idx.res.put(k, o)`,
		new: `			_, _ = i, k`,
		pkg: ".", run: `^TestPublish_StoresUnlockedWithKeysReserved$`,
		why: "a Publish calls PutMany with its keys unreserved: a Subscribe in between misses the block and records a want that the Publish's plan did not see",
	},
	{
		id: "g1-subscribe-one-hit-unchecked", g: "G1", file: "subscription_want.go",
		old: `	o.io = n.bs != nil && !s.keeps && len(o.hits) > 0`,
		new: `	o.io = n.bs != nil && !s.keeps && len(o.hits) > 1`,
		pkg: ".", run: `^TestSubscribe_StoredBlockReachesOtherWaiters$`,
		why: "the general path of Subscribe skips the blockstore check when a single key is new: a block stored before the Subscribe never arrives",
	},
	{
		id: "g1-commit-no-start-over", g: "G1", file: "subscription_want.go",
		old: `			if e == nil || !s.listedIn(e, k, &locked) {`,
		new: `			if e != nil && !s.listedIn(e, k, &locked) {`,
		pkg: ".", run: `^TestIO_SubscribeStartsOverWhenAWantEndsDuringItsCheck$`,
		why: "a Subscribe whose already-wanted key was delivered during its check commits without wanting it again: it returns nil and never gets that key's next block",
	},

	{
		id: "g1-check-unreserved", g: "G1", file: "shard.go",
		old: `			n.shards[o.hits[i].shard].idx.res.put(o.hits[i].key, o)`,
		new: `			_ = i`,
		pkg: ".", run: `^TestSubscribe_ChecksStoreUnlockedWithKeysReserved$`,
		why: "Subscribe checks the blockstore with its keys unreserved: a Publish during the check, planned without the want, stores the block after the Get missed, and the want recorded next never gets it",
	},
	{
		id: "g1-handover-releases-shards-first", g: "G1", file: "run.go",
		old: `	o.handOut()
	n.unlockExcept(o.locks, o.keep)`,
		new: `	n.unlockExcept(o.locks, o.keep)
	o.handOut()`,
		pkg: ".", run: `^TestHandOver_(WantsWaitsForTheMessageOfAnUncancelledKey|CancelWaitsForTheMessageOfAnUncancelledKey|SubscribeWantWaitsForItsFoundBlock|SubscribeWaitsForTheHaveOfAPublish)$`,
		why: "an operation releases its shards but the cancel function's before it queues its messages: an operation or a read on one of its keys sees it done, or is ordered after it, and returns before a target's message is in its channel",
	},

	{
		id: "g1-fetch-miss-drops-delivery", g: "G1", file: "fetch.go",
		old: `		s = n.newRequest(deliveryFunc(newFunc)) // before relock: no allocation under the shard lock`,
		new: `		s = n.newRequest(deliveryFunc(nil)) // before relock: no allocation under the shard lock`,
		pkg: ".", run: `^TestFetch_MissReturnsARequestThatWantsTheKey$`,
		why: "a Fetch that misses returns a request that wants the key but whose delivery function is not the caller's: the block, when it comes, reaches nobody",
	},

	// G2: at most once.
	{
		id: "g2-visit-repeats-blocks", g: "G2", file: "interest_index.go",
		old: `	if e.seenKinds&k != 0 {`,
		new: `	if e.seenKinds&k != 0 && k != kindBlock {`,
		pkg: ".", run: `^TestPublish_DuplicateBlocksDeliveredOnce$`,
		why: "a block repeated in one message is delivered once per copy",
	},
	{
		id: "g2-hit-ignores-version", g: "G2", file: "subscription_want.go",
		old: `	if x.version(k) != ver {
		return false, false, nil
	}`,
		new: `	if x.version(k) < ver {
		return false, false, nil
	}`,
		pkg: ".", run: `^TestSubscribeOne_HitAfterOwnWantDuringTheGet$`,
		why: "a one-key Subscribe's hit is handed over although the subscription recorded a want of the key during the Get: the block comes twice",
	},

	// G3: store before notify; a failed PutMany delivers nothing and loses no want.
	{
		id: "g3-store-async", g: "G3", file: "publish.go",
		old: `	err := n.bs.PutMany(ctx, o.store)`,
		new: `	go n.bs.PutMany(context.WithoutCancel(ctx), append(o.store[:0:0], o.store...)) //nolint:errcheck
	var err error`,
		pkg: ".", run: `^TestDelivery_BlockIsStoredWhenReceived$`,
		why: "Publish delivers while PutMany still runs: a subscriber can receive a block that Has does not report",
	},
	{
		id: "g3-failed-store-delivers", g: "G3", file: "publish.go",
		old: `		return fmt.Errorf("notifier: publish %d blocks from %q: store: %w", len(o.store), o.msg.From, err)`,
		new: `		return nil`,
		pkg: ".", run: `^TestPublish_FailedStoreDeliversNothingKeepsWants$`,
		why: "a failed PutMany is ignored: its blocks are delivered, unstored, and the wants they end are lost",
	},

	// G4: no unsolicited storage (Publish step 1).
	{
		id: "g4-unwanted-remote-stored", g: "G4", file: "publish.go",
		old: `	return from == "" && !o.storing(k)`,
		new: `	return !o.storing(k)`,
		pkg: ".", run: `^TestPublish_StoresRemoteBlocksOnlyIfWanted$`,
		why: "a block from a peer that nobody wants is stored",
	},

	// G5: CANCEL never overtakes WANT; each ended key reported exactly once.
	{
		id: "g5-cancel-after-unlock", g: "G5", file: "run.go",
		old: `		o.step = stepCancel
		if len(o.cancels) > 0 && n.cfg.cancel != nil {
			n.cfg.cancel(append([]cid.Cid(nil), o.cancels...))
		}
	}
	if o.step == stepCancel {
		n.unlock(o.keep)
		o.step, o.next = stepSlow, 0
	}`,
		new: `		o.step = stepCancel
	}
	if o.step == stepCancel {
		n.unlock(o.keep)
		o.step, o.next = stepSlow, 0
		if len(o.cancels) > 0 && n.cfg.cancel != nil {
			n.cfg.cancel(append([]cid.Cid(nil), o.cancels...))
		}
	}`,
		pkg: ".", run: `^TestCancel_CalledWithReportedShardsHeld$`,
		why: "the tempting alternative of WithCancelFunc: the cancel function runs after the shard locks are released, so a later Subscribe's WANT can precede the CANCEL",
	},
	{
		id: "g5-delivered-key-shard-released", g: "G5", file: "run.go",
		old: `			o.cancels = append(o.cancels, h.key)
			o.keep.Add(int(h.shard))`,
		new: `			o.cancels = append(o.cancels, h.key)`,
		pkg: ".", run: `^TestCancel_CalledWithReportedShardsHeld$`,
		why: "the shard of a key whose last want a delivery ended is released before the cancel function reports it",
	},
	{
		id: "g5-interest-cancel-early", g: "G5", file: "interest_index.go",
		old: `	if x.held[k] != nil {
		return false
	}`,
		new: `	if x.held[k] != nil {
		return true
	}`,
		pkg: ".", run: `^TestInterestCancel_OnlyWhenLastWantOfAnyKindEnds$`,
		why: "a delivery reports its key to the cancel function while an interest subscription still wants it",
	},
	{
		id: "g5-release-last-want-unreported", g: "G5", file: "subscription_release.go",
		old: `	if last {
		o.cancels = append(o.cancels, k)`,
		new: `	if last && len(o.cancels) == 0 {
		o.cancels = append(o.cancels, k)`,
		pkg: ".", run: `^TestCancel_CloseReportsRemainingKeys$`,
		why: "an Unsubscribe or close that ends the last wants of several keys reports only the first to the cancel function",
	},
	{
		id: "g5-releaseall-reports-others-end", g: "G5", file: "subscription_end.go",
		old: `	report = report && first`,
		new: `	_ = first`,
		pkg: ".", run: `^TestReleaseAll_FinishingAPendingSlowEndReportsNothing$`,
		why: "a ReleaseAll that finishes a slow-consumer end pending before it began returns the keys, which its doc says go only to the cancel function",
	},

	{
		id: "g5-cancel-gets-the-ops-slice", g: "G5", file: "run.go",
		old: `			n.cfg.cancel(append([]cid.Cid(nil), o.cancels...))`,
		new: `			n.cfg.cancel([]cid.Cid(o.cancels))`,
		pkg: ".", run: `^TestCancel_FunctionOwnsTheKeysItGets$`,
		why: "the cancel function gets the pooled op's own slice: keys it keeps are overwritten by a later operation's",
	},

	{
		id: "g5-released-key-shard-released", g: "G5", file: "subscription_release.go",
		old: `		o.cancels = append(o.cancels, k)
		o.keep.Add(int(sh))`,
		new: `		o.cancels = append(o.cancels, k)`,
		pkg: ".", run: `^TestCancel_CalledWithReportedShardsHeld$`,
		why: "an Unsubscribe or close releases the shard of a key whose last want it ended before the cancel function reports it",
	},

	// G6: publish order; a slow consumer is ended, never blocks a Publish.
	{
		id: "g6-send-past-backlog", g: "G6", file: "subscription.go",
		old: `	if !s.draining {
		select {
		case s.out <- *m:`,
		new: `	{
		select {
		case s.out <- *m:`,
		pkg: ".", run: `^TestSubscription_KeepsPublishOrderWhileDraining$`,
		why: "a message goes straight to the channel while older ones wait in the backlog: publish order is lost",
	},
	{
		id: "g6-bound-doubled", g: "G6", file: "subscription.go",
		old: `max > 0 && s.backlog.Len() >= max {`,
		new: `max > 0 && s.backlog.Len() >= 2*max {`,
		pkg: ".", run: `^TestSubscription_SlowConsumerIsEnded$`,
		why: "WithMaxPending lets twice as many messages wait before it ends the consumer",
	},
	{
		id: "g6-wants-end-before-targets-locked", g: "G6", file: "run.go",
		old: `	o.build()
	o.lockTargets()`,
		new: `	o.build()
	defer o.lockTargets()`,
		pkg: ".", run: `^TestRoute_WantEndsOnlyWithItsMessage$`,
		why: "route ends the delivered wants before it locks the targets: a reader under the subscription's lock sees the want ended before its message is queued, and a later delivery overtakes it",
	},
	{
		id: "g6-publish-blocks-on-full-channel", g: "G6", file: "subscription.go",
		old: `		case s.out <- *m:
			return false
		default:
		}`,
		new: `		case s.out <- *m:
			return false
		}`,
		pkg: ".", run: `^TestPublish_NeverBlocksOnSlowSubscriber$`,
		why: "a Publish to a full channel waits for the reader, holding the locks: synctest.Wait returns with it blocked, and the test fails at once",
	},
	{
		id: "g6-resume-nests", g: "G6", file: "subscription_end.go",
		old: `		if queue == nil {
			n.putOp(o)`,
		new: `		if queue == nil || len(*queue) >= 0 {
			n.putOp(o)`,
		pkg: ".", run: `^TestResume_ChainOfPendingClosesDoesNotNest$`,
		why: "each resumed slow-consumer end resumes the ends parked on it from its own putOp: a chain of M nests M sets of frames",
	},
	{
		id: "g6-resume-stops-at-a-panic", g: "G6", file: "internal/carryon/carryon.go",
		old: `		if !finished {
			Drain(q, f)`,
		new: `		if !finished && len(*q) < 0 {
			Drain(q, f)`,
		pkg: ".", run: `^TestResume_ChainGoesOnAfterAPanic$`,
		why: "a cancel function that panics in one resumed slow-consumer end leaves the ends queued after it parked for ever",
	},

	{
		id: "g5-fetch-hit-ignores-version", g: "G5", file: "fetch.go",
		old: `		if n.shards[sh].idx.version(k) != ver {`,
		new: `		if false {`,
		pkg: ".", run: `^TestFetch_HitOfABlockAPublishHasNotCommitted$`,
		why: "a Fetch whose Get found a block that a Publish stored and has not committed returns it before the cancel function reports the key that the Publish ends",
	},

	{
		id: "g6-overflow-lost-to-an-earlier-end", g: "G6", file: "subscription.go",
		old: `	if s.overflow {
		// An operation overflowed s and will end it, but this close came
		// first: messages were dropped for slowness all the same.
		err = ErrSlowConsumer
	}`,
		new: `	if s.overflow && err != nil {
		// An operation overflowed s and will end it, but this close came
		// first: messages were dropped for slowness all the same.
		err = ErrSlowConsumer
	}`,
		pkg: ".", run: `^TestSubscription_OverflowedThenEndedByAnotherCallIsASlowConsumer$`,
		why: "a Remove that ends an overflowed subscription before the overflowing operation does leaves Err nil, though messages were dropped for slowness",
	},

	// G7: lifecycle.
	{
		id: "g7-close-not-once", g: "G7", file: "notifier.go",
		old: `	n.closeOnce.Do(n.close)`,
		new: `	n.close()`,
		pkg: ".", run: `^TestClose_EndsEverythingAndIsIdempotent$`,
		why: "a second Close runs the close again",
	},
	{
		id: "g7-remove-returns-before-drain-exits", g: "G7", file: "subscription_end.go",
		old: `	defer func() { // deferred: also if the cancel function panics, drain has returned before the panic goes on
		if o.exited != nil {
			<-o.exited // drain sees s closed and returns; it needs no lock we hold
		}
	}()`,
		new: `	_ = 0`,
		pkg: ".", run: `^TestRemove_ConcurrentCallsAllReturnWithMessagesClosed$`,
		why: "Remove returns while the subscription's drain goroutine still runs",
	},
	{
		id: "g7-drain-closes-out-late", g: "G7", file: "subscription.go",
		old: `		if s.draining && s.handing.CompareAndSwap(handingOn, handingStopped) {
			close(s.quit)
			<-s.exited
			s.draining = false
		}`,
		new: `		if s.draining && s.handing.CompareAndSwap(handingOn, handingStopped) {
			close(s.quit)
			go func() { <-s.exited; close(s.out) }()
			return
		}`,
		pkg: ".", run: `^TestEnd_(MessagesClosedWhenTheCancelFunctionRuns|(Remove|Close|SlowConsumerEnd)ClosesMessagesWithItsWants)$`,
		why: "an end whose drain goroutine is handing a message leaves Messages() to be closed after it has released its locks: a reader sees the wants gone while Messages() is open and empty",
	},
	{
		id: "g7-out-closed-under-a-send", g: "G7", file: "subscription.go",
		old: `			close(s.quit)
			<-s.exited
			s.draining = false`,
		new: `			close(s.quit)
			s.draining = false`,
		pkg: ".", run: `^TestEnd_`,
		why: "an end closes Messages() without waiting for the drain goroutine it stopped, which may still be in its send: a send on a closed channel, or a race of the close with the send",
	},
	{
		id: "g7-close-skips-barrier", g: "G7", file: "notifier.go",
		old: `		n.barrier()       // an operation that locked`,
		new: `		// an operation that locked`,
		pkg: ".", run: `^TestClose_WaitsForACancelFunctionUnderWay$`,
		why: "Close returns while an operation that locked a shard before it began is still in progress (a Publish in its cancel function)",
	},
	{
		id: "g7-close-skips-inflight", g: "G7", file: "notifier.go",
		old: `		n.inflight.Wait() // operations in blockstore I/O`,
		new: `		_ = 0 // operations in blockstore I/O`,
		pkg: ".", run: `^TestClose_WaitsForAStalledPublishNobodyWaitsFor$`,
		why: "Close returns while an operation is still in its blockstore call",
	},
	{
		id: "g7-old-remove-unregisters-new", g: "G7", file: "notifier.go",
		old: `	if n.sessions[s.id] == s {`,
		new: `	if n.sessions[s.id] != nil {`,
		pkg: ".", run: `^TestRemove_AgainAfterItsIDIsReusedLeavesTheNewOne$`,
		why: "a second Remove of an old subscription unregisters the new one that reuses its session ID",
	},
	{
		id: "g7-waiter-not-woken-by-close", g: "G7", file: "shard.go",
		old: `	if refuseClosed {
		done = n.done
	}`,
		new: `	_ = refuseClosed`,
		pkg: ".", run: `^(TestRequest_WaitingSubscribeWakesWhenCloseBegins|TestClose_WakesASleeperBehindTheCloseOfAnotherSubscription)$`,
		why: "a Publish, Subscribe or Fetch asleep behind a stalled PutMany when Close begins sleeps on until the PutMany returns, though it can only return ErrClosed",
	},
	{
		id: "g7-subscribe-after-close-says-why", g: "G7", file: "subscription_want.go",
		old: `	if n.closed.Load() {
		return ErrClosed
	}
	if s.closed.Load() { // before ctx`,
		new: `	if s.closed.Load() { // before ctx`,
		pkg: ".", run: `^TestSubscribe_AfterCloseBetweenOverflowAndEndSaysClosed$`,
		why: "Subscribe after Close returns the subscription's own end (ErrSlowConsumer) instead of ErrClosed",
	},

	{
		id: "g7-lazily-closed-request-err-nil", g: "G7", file: "subscription.go",
		old: `	if s.err == nil && s.lazilyClosed() {
		return ErrClosed
	}
	return s.err`,
		new: `	return s.err`,
		pkg: ".", run: `^TestRequest_ListedOnlyWhenCloseHasWorkForIt$`,
		why: "a request that Close never listed (it wanted nothing yet) reports Err nil after Close, as if Removed",
	},

	{
		id: "g7-peek-ignores-close", g: "G7", file: "shard_read.go",
		old: `	if n.closed.Load() || !x.idx.alone(k) {`,
		new: `	if !x.idx.alone(k) {`,
		pkg: ".", run: `^TestFetch_CheckOfCloseBeforePeekDoesNotLetItThrough$`,
		why: "a Fetch or one-key Subscribe that passed its first check of Close before Close began calls Get after Close has returned, and a hit returns its block instead of ErrClosed",
	},
	{
		id: "g7-newrequest-func-after-close", g: "G7", file: "notifier.go",
		old: `	if n.closed.Load() {
		return nil, ErrClosed
	}
	if f == nil {`,
		new: `	if n.closed.Load() && f == nil {
		return nil, ErrClosed
	}
	if f == nil {`,
		pkg: ".", run: `^TestRequest_EndedByClose$`,
		why: "NewRequest with a delivery function succeeds after Close",
	},

	// G8: no leak.
	{
		id: "g8-release-keeps-stale-count", g: "G8", file: "subscription_release.go",
		old: `			s.stale = max(s.stale-1, 0)
			continue`,
		new: `			continue`,
		pkg: ".", run: `^TestRelease_UnsubscribedStaleEntryLeavesTheCount$`,
		why: "an Unsubscribe of a delivered key deletes its stale entry but leaves it counted: the next delivery takes the map for all stale and clears a live want, which Remove never ends",
	},
	{
		id: "g8-delivered-pairs-leak", g: "G8", file: "interest_index.go",
		old: `	x.pairs.Add(-int64(len(e.subs)))`,
		new: `	x.pairs.Add(-1)`,
		pkg: ".", run: `^TestDeliveredWant_IsGoneEverywhere$`,
		why: "a delivery to several subscriptions counts off one want: Stats.Wants never returns to 0",
	},
	{
		id: "g8-unregister-count-leak", g: "G8", file: "notifier.go",
		old: `		n.sessions = shrink.Fit(n.sessions, &n.sessionsPeak)
		n.counts.Add(-oneLive)`,
		new: `		n.sessions = shrink.Fit(n.sessions, &n.sessionsPeak)`,
		pkg: ".", run: `^TestIndex_EmptyAfterAllRemoved$`,
		why: "a removed session stays counted in Stats.Subscriptions",
	},
	{
		id: "g8-stale-keys-kept", g: "G8", file: "subscription_want.go",
		old: `return e.ended.Load() })`,
		new: `return e.ended.Load() && e.subs != nil })`,
		pkg: ".", run: `^TestStaleKeys_Compacted$`,
		why: "a subscription keeps an entry for every key ever delivered to it",
	},
	{
		id: "g8-ended-want-keeps-sub", g: "G8", file: "interest_index.go",
		old: `	if e.first[0] == s {`,
		new: `	if false && e.first[0] == s {`,
		pkg: ".", run: `^TestEndWant_KeepsNoSubscriptionAlive$`,
		why: "a removed subscription stays reachable, with its channel, while another subscription wants one of its keys",
	},
	{
		id: "g8-backlog-keeps-burst", g: "G8", file: "internal/fifo/fifo.go",
		old: `	case c > keepCap && n <= c/8:`,
		new: `	case false && c > keepCap && n <= c/8:`,
		pkg: "./internal/fifo", run: `^TestQueue_(Emptied|Behind)KeepsNoBurstStorage$`,
		why: "a subscription that fell far behind once keeps its backlog's storage, sized for the burst, for its whole life",
	},
	{
		id: "g8-delivered-keys-keep-burst", g: "G8", file: "interest_index.go",
		old: "\tdelete(x.wants, k)\n\tx.wants = shrink.Fit(x.wants, &x.wantsPeak)\n\tx.pairs.Add(-int64(len(e.subs)))",
		new: "\tdelete(x.wants, k)\n\tx.pairs.Add(-int64(len(e.subs)))",
		pkg: ".", run: `^TestBurst_WantsGiveBackTheirStorage$/^delivery$`,
		why: "the index keeps for good the storage of the most keys it ever held: a million wants delivered leave some 35 MB behind",
	},
	{
		id: "g8-subscription-keys-keep-burst", g: "G8", file: "subscription_want.go",
		old: "\t}\n\ts.keys = shrink.Fit(s.keys, &s.keysPeak)\n\ts.stale = 0",
		new: "\t}\n\t_ = shrink.Floor // the import stays used\n\ts.stale = 0",
		pkg: ".", run: `^TestBurst_WantsGiveBackTheirStorage$/^delivery$`,
		why: "a live subscription keeps the storage of the most keys it ever wanted, after their blocks came",
	},
	{
		id: "g8-idle-subscription-keeps-stale-keys", g: "G8", file: "subscription.go",
		old: "\ts.stale += stale\n\tif stale > 0 && (len(s.keys) > shrink.Floor || s.stale == len(s.keys)) {",
		new: "\ts.stale += stale\n\tif false {",
		pkg: ".", run: `^TestBurst_WantsGiveBackTheirStorage$/^idle_after_delivery$`,
		why: "a subscription left idle after a burst of deliveries keeps every stale key and the interests they point to until its next Subscribe or its end",
	},
	{
		id: "g8-idle-small-subscription-keeps-stale-keys", g: "G8", file: "subscription.go",
		old: "if stale > 0 && (len(s.keys) > shrink.Floor || s.stale == len(s.keys)) {",
		new: "if stale > 0 && len(s.keys) > shrink.Floor {",
		pkg: ".", run: `^(TestStaleKeys_LastDeliveryEmptiesTheMap|TestBurst_IdleSubscriptionThatWantsNothingKeepsNoInterests)$`,
		why: "a subscription of up to 1,024 keys that got every block it wanted keeps an entry for each, and the interests they point to, until its next Subscribe or its end",
	},
	{
		id: "g8-stale-runs-ahead", g: "G8", file: "subscription_want.go",
		old: "\tif len(s.keys) == before && s.stale > 0 { // replaced an entry: a stale one, as only those may be there\n\t\ts.stale--\n\t}",
		new: "\t_ = before",
		pkg: ".", run: `^TestStaleKeys_LastDeliveryEmptiesTheMap$`,
		why: "a stale entry replaced by a new want stays counted, so the count runs ahead and the clear of a map it takes for all stale drops the wants left",
	},
	{
		id: "g8-stale-counts-unindexed-hits", g: "G8", file: "op.go",
		old: "\t\t\t\tt.nb++\n\t\t\t\tif h.e != nil {\n\t\t\t\t\tt.stale++\n\t\t\t\t}",
		new: "\t\t\t\tt.nb++\n\t\t\t\tt.stale++",
		pkg: ".", run: `^TestStaleKeys_MixedHitsCountOnlyEndedInterests$`,
		why: "a Subscribe that finds a block others want and one nobody else wants counts both as stale entries of its map, so the map is taken for all stale and cleared while it still wants a key",
	},
	{
		id: "g8-delivery-compaction-drops-live-wants", g: "G8", file: "subscription.go",
		old: "\tif stale > 0 && (len(s.keys) > shrink.Floor || s.stale == len(s.keys)) {\n\t\ts.compact()",
		new: "\tif stale > 0 && (len(s.keys) > shrink.Floor || s.stale == len(s.keys)) {\n\t\tclear(s.keys)",
		pkg: ".", run: `^TestBurst_WantsGiveBackTheirStorage$/^idle_after_delivery$`,
		why: "the compaction that delivery makes forgets the wants the subscription still has: AppendWanted no longer reports them, and its Remove leaves them in the index",
	},
	{
		id: "g8-registry-keeps-burst", g: "G8", file: "notifier.go",
		old: "\t\tn.sessions = shrink.Fit(n.sessions, &n.sessionsPeak)\n",
		new: "",
		pkg: ".", run: `^TestBurst_SubscriptionsGiveBackTheirStorage$`,
		why: "the registry keeps the storage of the most subscriptions that ever lived at once",
	},
	{
		id: "g8-compat-calls-keep-burst", g: "G8", file: "bitswapcompat/end.go",
		old: "\tps.calls = shrink.Fit(ps.calls, &ps.callsPeak)\n\tps.ending++",
		new: "\tps.ending++",
		pkg: "./bitswapcompat", run: `^TestBurst_CallsGiveBackTheirStorage$/^ctx$`,
		why: "PubSub keeps the storage of the most calls that ever waited at once",
	},
	{
		id: "g8-subscribers-list-keeps-burst", g: "G8", file: "interest_index.go",
		old: "\te.subs = shrink.Clip(e.subs[:end])",
		new: "\te.subs = e.subs[:end]",
		pkg: ".", run: `^TestBurst_OneKeyOfManySubscribersGivesBackItsStorage$/^left=10$`,
		why: "a key that many subscriptions once wanted keeps the storage of their list while a few still want it",
	},
	{
		id: "g8-subscriber-positions-keep-burst", g: "G8", file: "interest_index.go",
		old: "\tp.at = shrink.Fit(p.at, &p.peak)\n",
		new: "",
		pkg: ".", run: `^TestBurst_OneKeyOfManySubscribersGivesBackItsStorage$/^left=129$`,
		why: "the positions kept for the subscribers of a key that many once wanted keep the storage of all of them",
	},
	{
		id: "g1-stale-subscriber-position", g: "G1", file: "interest_index.go",
		old: "\tif i < len(e.subs) {\n\t\tp.at[e.subs[i]] = i\n\t}\n",
		new: "",
		pkg: ".", run: `^TestIndex_PositionsOfManySubscribers$`,
		why: "ending one of many wants of a key leaves the position of the subscriber moved into its place stale, so a later end removes another subscription's want",
	},
	{
		id: "g8-kept-message-keeps-others-blocks", g: "G8", file: "op.go",
		old: `			shared = false`,
		new: `			shared = true`,
		pkg: ".", run: `^Test(Publish|Subscribe)_KeptMessageKeepsNo`,
		why: "a message that one subscription keeps keeps reachable the blocks that the same Publish handed to the others",
	},

	{
		id: "g8-fetch-failed-check-keeps-request", g: "G8", file: "fetch.go",
		old: `		s.Remove()
		return nil, nil, err`,
		new: `		return nil, nil, err`,
		pkg: ".", run: `^TestFetch_ErrorsChangeNothing$`,
		why: "a Fetch on the general path whose blockstore check fails returns an error but leaves the request it made in the Notifier",
	},
	{
		id: "g8-fetch-panic-keeps-request", g: "G8", file: "fetch.go",
		old: `		if !returned { // f panicked or exited the goroutine: nobody else can remove s`,
		new: `		if !returned && false { // f panicked or exited the goroutine: nobody else can remove s`,
		pkg: ".", run: `^TestFetch_PanickingDeliveryFunctionRemovesTheRequest$`,
		why: "a Fetch whose delivery function panics leaves the request, which its caller never got, in the Notifier for ever",
	},

	{
		id: "api-release-returns-the-ops-slice", g: "API", file: "op.go",
		old: `	return slices.Clone(o.freed)`,
		new: `	return o.freed`,
		pkg: ".", run: `^TestRelease_NormalReturnsKeysNobodyWants$`,
		why: "Release and ReleaseAll return the pooled op's own slice: keys the caller keeps are overwritten by a later operation's",
	},
	{
		id: "api-one-hit-message-uncapped", g: "API", file: "op.go",
		old: `			t.nb, t.msg.Blocks = 1, blks[j:j+1:j+1]`,
		new: `			t.nb, t.msg.Blocks = 1, blks[j:j+1]`,
		pkg: ".", run: `^TestMessage_AppendWritesIntoNoOtherMessage$`,
		why: "the messages of a one-block Publish share one array uncapped: a receiver that appends to its Blocks overwrites the next subscription's block",
	},
	{
		id: "api-carved-message-uncapped", g: "API", file: "op.go",
		old: `	return arena[:0:n], arena[n:]`,
		new: `	return arena[:0], arena[n:]`,
		pkg: ".", run: `^TestMessage_AppendWritesIntoNoOtherMessage$`,
		why: "the messages of one operation are carved from one array uncapped: a receiver that appends to one overwrites another's keys",
	},

	{
		id: "g8-compact-clears-one-live", g: "G8", file: "subscription_want.go",
		old: `	case s.stale > 0 && s.stale == len(s.keys): // s wants nothing: clear, reading no entry`,
		new: `	case s.stale > 0 && s.stale >= len(s.keys)-1: // s wants nothing: clear, reading no entry`,
		pkg: ".", run: `^TestStaleKeys_OwnHitsNextToOneStaleEntryKeepTheLiveWant$`,
		why: "a Subscribe that hands s only blocks nobody else wants clears a map of one live want and stale entries: Remove never ends that want nor reports its key",
	},
	{
		id: "g8-backlog-compaction-keeps-copies", g: "G8", file: "internal/fifo/fifo.go",
		old: `		clear(q.buf[n:])`,
		new: `		_ = n`,
		pkg: "./internal/fifo", run: `^TestQueue_HoldsOnlyWhatIsQueued$`,
		why: "Push's compaction leaves copies of moved messages past the new length, reachable until overwritten",
	},

	// G9: bad input refused whole, changing nothing.
	{
		id: "g9-undefined-block-cid", g: "G9", file: "response.go",
		old: `		if !b.Cid().Defined() {`,
		new: `		if !b.Cid().Defined() && i < 0 {`,
		pkg: ".", run: `^TestBadInput_UndefinedCidAnywhereIsRefused$`,
		why: "a block whose CID is undefined is not refused with ErrInvalidCid",
	},
	{
		id: "g9-local-repeat-stored-twice", g: "G9", file: "publish.go",
		old: `	return from == "" && !o.storing(k)`,
		new: `	return from == ""`,
		pkg: ".", run: `^TestPublish_RepeatedLocalBlockStoredOnce$`,
		why: "a local block that nobody wants, repeated in one message, is passed to PutMany twice",
	},
	{
		id: "g9-held-repeat-stored-twice", g: "G9", file: "publish.go",
		old: `		return h.visit(o.id, kindBlock)`,
		new: `		return true`,
		pkg: ".", run: `^TestInterest_RemoteBlockWantedOnlyByInterestIsStored$`,
		why: "a block that only interest subscriptions hold, repeated in one message, is passed to PutMany once per copy",
	},
	{
		id: "g9-first-key-unchecked", g: "G9", file: "response.go",
		old: `		if !k.Defined() {`,
		new: `		if !k.Defined() && i > 0 {`,
		pkg: ".", run: `^TestBadInput_RefusedWhole$`,
		why: "an undefined CID first among the keys of Subscribe, Haves or DontHaves is not refused",
	},
	{
		id: "g9-nil-block-late", g: "G9", file: "response.go",
		old: `		if b == nil {`,
		new: `		if b == nil && i > 0 {`,
		pkg: ".", run: `^TestBadInput_NilBlockFirstIsRefused$`,
		why: "a nil first block is not refused with ErrNilBlock",
	},
	{
		id: "g9-duplicate-session", g: "G9", file: "notifier.go",
		old: `	if _, dup := n.sessions[s.id]; dup {`,
		new: `	if _, dup := n.sessions[s.id]; dup && s.keeps {`,
		pkg: ".", run: `^TestBadInput_RefusedWhole$`,
		why: "a second live subscription with the same session ID is accepted",
	},

	// G10: race-clean.
	{
		id: "g10-read-without-shard-lock", g: "G10", file: "shard.go",
		old: `	sh.mu.Lock()
	defer sh.mu.Unlock()
	f(&sh.idx)`,
		new: `	f(&sh.idx)`,
		pkg: ".", run: `^TestInterestStress_MixedKinds$`,
		why: "Wanted, Interested and Wants read a shard's index without its lock",
	},
	{
		id: "g10-one-key-read-keeps-subscription-locked", g: "G10", file: "subscription_want.go",
		old: `	in := s.listedIn(e, k, &locked)
	if locked {
		s.mu.Unlock()
	}
	return in`,
		new: `	return s.listedIn(e, k, &locked)`,
		pkg: ".", run: `^TestIO_ReadOfAKeyOfManySubscribersLeavesNoLockHeld$`,
		why: "Wants of a key of more than eight subscribers returns holding the subscription's lock: its next operation waits for ever",
	},
	{
		id: "g10-scope-read-keeps-subscription-locked", g: "G10", file: "shard.go",
		old: `		in = o.sub.inInterest(e, k) // as candidates and commitRelease read it`,
		new: `		locked := false
		in = o.sub.listedIn(e, k, &locked)`,
		pkg: ".", run: `^TestIO_ReadOfAKeyOfManySubscribersLeavesNoLockHeld$`,
		why: "a waiting Release reads a key of more than eight subscribers under its subscription's lock and keeps it: its own commit then waits for ever",
	},

	// G11: no blockstore call under a lock.
	{
		id: "g10-shardset-next-skips-rest-of-word", g: "G10", file: "internal/shardset/shardset.go",
		old: `	if m := s[w] >> uint(i&63); m != 0 {`,
		new: `	if m := s[w] >> uint(i&63); m != 0 && w == 0 {`,
		pkg: "./internal/shardset", run: `.`,
		why: "past the first 64 shards, iterating an operation's lock set yields only the lowest shard of each 64: the operation reads and writes the others' keys unlocked",
	},
	{
		id: "g11-io-under-shard-locks", g: "G11", file: "shard.go",
		old: `	n.reserve(o)
	n.unlock(o.locks)
	returned := false
	defer func() {
		if !returned { // io panicked
			n.lock(o.locks)
			n.unreserve(o)
			n.unlock(o.locks)
		}
	}()
	err := io(ctx, n, o)
	returned = true
	n.lock(o.locks)`,
		new: `	n.reserve(o)
	returned := false
	defer func() {
		if !returned { // io panicked
			n.unreserve(o)
			n.unlock(o.locks)
		}
	}()
	err := io(ctx, n, o)
	returned = true`,
		pkg: ".", run: `^(TestPublish_StoresUnlockedWithKeysReserved|TestSubscribe_ChecksStoreUnlockedWithKeysReserved)$`,
		why: "PutMany and the Gets of a Subscribe run holding the shard locks of their keys",
	},
	{
		id: "g11-subscribe-reserves-wanted-keys", g: "G11", file: "subscription_want.go",
		old: `	o.onlyHits = o.io`,
		new: `	o.onlyHits = false`,
		pkg: ".", run: `^TestIO_SubscribeHoldsUpNoKeyItDoesNotCheck$`,
		why: "a Subscribe reserves the keys its subscription wants already: operations on them wait for its Gets of other keys",
	},
	{
		id: "g11-subscribe-waits-for-wanted-keys", g: "G11", file: "shard.go",
		old: `	return in == (o.scope == waitWanted)`,
		new: `	return in == (o.scope == waitWanted) || o.scope == waitUnwanted`,
		pkg: ".", run: `^TestIO_SubscribeWaitsForNoKeyItWantsAlready$`,
		why: "a Subscribe waits for a blockstore call on a key its subscription wants already",
	},
	{
		id: "g11-waiter-marks-every-key", g: "G11", file: "shard.go",
		old: `	return b.claimant.wakeOnRelease(), n.markOnly(o, b.key, b.shard)`,
		new: `	freed = n.markOnly(o, b.key, b.shard)
	for i, k := range o.resKeys {
		if n.needs(o, k, o.keyShards[i]) {
			n.shards[o.keyShards[i]].idx.addMark(k, o)
		}
	}
	return b.claimant.wakeOnRelease(), freed`,
		pkg: ".", run: `^TestIO_WaiterHoldsUpOnlyTheKeysItFoundBusy$`,
		why: "a waiting operation marks all its keys, holding up operations on keys it did not find busy for another key's stalled store",
	},
	{
		id: "g11-waiter-keeps-its-old-mark", g: "G11", file: "shard.go",
		old: `	if o.marked {
		n.unmark(o)
		freed = o.takeParked()
	}
	idx.addMark(k, o)`,
		new: `	idx.addMark(k, o)`,
		pkg: ".", run: `^TestIO_WaiterHoldsUpOnlyTheKeyItWaitsFor$`,
		why: "a waiter keeps its mark on a key it found busy once that key is free again, holding later operations on it up for the stalled store call on another key that it now waits for",
	},
	{
		id: "g11-close-keeps-its-old-mark", g: "G11", file: "subscription_end.go",
		old: `	if o.marked {
		s.n.unmark(o)
		freed = o.takeParked()
	}
	o.resKeys = append(o.resKeys[:0], b.key)
	o.keyShards = append(o.keyShards[:0], b.shard)`,
		new: `	o.resKeys = append(o.resKeys, b.key)
	o.keyShards = append(o.keyShards, b.shard)`,
		pkg: ".", run: `^TestIO_WaiterHoldsUpOnlyTheKeyItWaitsFor$`,
		why: "a waiting close keeps its mark on a key it found busy once that key is free again, holding later operations on it up for the stalled store call on another key that it now waits for",
	},
	{
		id: "g11-moved-mark-keeps-parked-closes", g: "G11", file: "shard.go",
		old: `		n.unmark(o)
		freed = o.takeParked()`,
		new: `		n.unmark(o)`,
		pkg: ".", run: `^TestOverflow_PendingEndGoesOnWhenItsClaimantMovesItsMark$`,
		why: "a waiter that moves its mark to another key keeps the pending closes parked on it for the key it left, which then wait for the stalled store call it now waits for",
	},
	{
		id: "g11-moved-close-mark-keeps-parked-closes", g: "G11", file: "subscription_end.go",
		old: `		s.n.unmark(o)
		freed = o.takeParked()`,
		new: `		s.n.unmark(o)`,
		pkg: ".", run: `^TestOverflow_PendingEndGoesOnWhenThePendingEndItParkedOnMovesItsMark$`,
		why: "a pending close that moves its mark to another key keeps the pending closes parked on it for the key it left, which then wait for the stalled store call it now waits for",
	},
	{
		id: "g11-panicking-resume-keeps-mark", g: "G11", file: "shard.go",
		old: `		if !resumed {
			n.wakeUp(o, true)
		}`,
		new: `		_ = resumed`,
		pkg: ".", run: `^TestOverflow_PanicInAnEndAMovedMarkResumesLeavesNoMark$`,
		why: "a waiter whose resumption of a parked close panics in the cancel function leaves its mark, which holds its key up for good",
	},
	{
		id: "g7-panicking-resume-leaves-close-undone", g: "G7", file: "subscription_end.go",
		old: `		if !s.closed.Load() {
			s.close(err, false)
		}`,
		new: `		_ = err`,
		pkg: ".", run: `^TestOverflow_PanicInAnEndAMovedCloseMarkResumesStillEndsTheSubscription$`,
		why: "a Remove whose wait resumes a pending end whose cancel function panics returns by that panic with its subscription still open",
	},
	{
		id: "g11-waiter-unmarks-without-waking", g: "G11", file: "shard.go",
		old: `	o.marked = false
	o.wakeWaiters()`,
		new: `	o.marked = false`,
		pkg: ".", run: `^TestIO_WaiterHoldsUpOnlyTheKeyItWaitsFor$`,
		why: "a waiter that moves its mark off a key leaves the operations asleep behind that mark asleep, waiting for the stalled store call it now waits for",
	},

	// C: bitswapcompat, the drop-in layer (MIGRATION.md).
	{
		id: "c-failed-store-ends-no-call", g: "C", file: "bitswapcompat/publish.go",
		old: `	if err != nil { // the store failed: nothing else is left (no ctx, blks checked)
		ps.failWaiting(blks, listed)
	}`,
		new: `	_ = listed`,
		pkg: "./bitswapcompat", run: `^TestPubSub_FailedStoreEndsTheCallsWaitingForItsBlocks$`,
		why: "a failed store leaves the calls waiting for its blocks to wait until their ctx ends",
	},
	{
		id: "c-failed-store-ends-on-publisher", g: "C", file: "bitswapcompat/end.go",
		old: `			go c.finishEnd(stop)`,
		new: `			c.finishEnd(stop)`,
		pkg: "./bitswapcompat", run: `^TestPubSub_FailedStoreDoesNotWaitForAStalledStoreOfAnotherKey$`,
		why: "a Publish whose store failed ends the waiting calls itself, and waits for a stalled store of another of their keys (G11)",
	},
	{
		id: "c-failed-store-ends-late", g: "C", file: "bitswapcompat/end.go",
		old: `		if stop, ok := c.beginEnd(); ok {
			go c.finishEnd(stop)
		}`,
		new: `		go c.end()`,
		pkg: "./bitswapcompat", run: `^TestPubSub_FailedStoreEndsTheCallsBeforeItReturns$`,
		why: "the calls a failed store ends are still live when the Publish returns, so a later Publish of the same block reaches them",
	},
	{
		id: "c-failed-check-not-rechecked", g: "C", file: "bitswapcompat/pubsub.go",
		old: `		if ps.missed.Load() != missed {
			c.recheckLater(ctx, recheckFirst)
		}`,
		new: ``,
		pkg: "./bitswapcompat", run: `^TestPubSub_FailedCheckOfAStoredBlockIsCheckedAgain$`,
		why: "a call whose check of a stored block failed waits until its ctx ends: no Publish brings the block again",
	},
	{
		id: "c-recheck-takes-missing-for-failed", g: "C", file: "bitswapcompat/recheck.go",
		old: `		case !format.IsNotFound(err) && !errors.Is(err, datastore.ErrNotFound):`,
		new: `		case err != nil || format.IsNotFound(err) || errors.Is(err, datastore.ErrNotFound):`,
		pkg: "./bitswapcompat", run: `^TestPubSub_FailedCheckOfAStoredBlockIsCheckedAgain$`,
		why: "a key found missing is checked again and again, although the Publish that brings it delivers it",
	},
	{
		id: "c-recheck-no-backoff", g: "C", file: "bitswapcompat/recheck.go",
		old: `		c.recheckLater(ctx, min(2*d, recheckMax))`,
		new: `		c.recheckLater(ctx, min(d, recheckMax))`,
		pkg: "./bitswapcompat", run: `^TestPubSub_RecheckBacksOff$`,
		why: "a store that keeps failing is read every recheckFirst for as long as the call waits",
	},
	{
		id: "c-recheck-no-cap", g: "C", file: "bitswapcompat/recheck.go",
		old: `		c.recheckLater(ctx, min(2*d, recheckMax))`,
		new: `		c.recheckLater(ctx, 2*d)`,
		pkg: "./bitswapcompat", run: `^TestPubSub_RecheckBacksOff$`,
		why: "the delays grow without bound: a call of a store that recovers after a long outage waits for hours",
	},
	{
		id: "c-recheck-not-counted", g: "C", file: "bitswapcompat/recheck.go",
		old: `	if !closed {
		ps.ending++
	}`,
		new: ``,
		pkg: "./bitswapcompat", run: `^TestShutdown_WaitsForARecheckUnderWay$`,
		why: "Shutdown returns, and closes the Notifier, while a re-check still reads the blockstore and may publish",
	},
	{
		id: "c-recheck-store-failure-ends-calls", g: "C", file: "bitswapcompat/recheck.go",
		old: `		err := ps.publish(context.Background(), notifier.ResponseMessage{Blocks: found})`,
		new: `		ps.Publish("", found...)
		var err error`,
		pkg: "./bitswapcompat", run: `^TestPubSub_RecheckWhoseStoreFailsKeepsTheCall$`,
		why: "a re-check whose needless store of a found block fails ends the calls waiting for it, without the block",
	},
	{
		id: "c-recheck-reports-while-counted", g: "C", file: "bitswapcompat/recheck.go",
		old: `	defer ps.endingDone()
	var found []blocks.Block`,
		new: `	defer func() {
		for _, err := range errs {
			report(ctx, ps.onErr, err)
		}
		ps.endingDone()
	}()
	var found []blocks.Block`,
		pkg: "./bitswapcompat", run: `^TestShutdown_FromTheErrorFuncOfARecheck$`,
		why: "an error function that calls Shutdown from a re-check's report waits for that re-check for ever",
	},
	{
		id: "c-recheck-timer-kept", g: "C", file: "bitswapcompat/recheck.go",
		old: `		c.retry.Stop()
		c.retry = nil`,
		new: ``,
		pkg: "./bitswapcompat", run: `^TestPubSub_RecheckEndsWithTheCall$`,
		why: "an ended call's timer stays armed, holding the call until it fires",
	},
	{
		id: "c-recheck-ignores-ended", g: "C", file: "bitswapcompat/recheck.go",
		old: `	c.retry = nil
	if c.ended {
		return nil, false
	}`,
		new: `	c.retry = nil`,
		pkg: "./bitswapcompat", run: `^TestPubSub_RecheckEndsWithTheCall$`,
		why: "a timer that fired just before its call ended re-checks the ended call's keys",
	},
	{
		id: "c-refused-message-ends-calls", g: "C", file: "bitswapcompat/compat.go",
		old: `	if err != nil && !refused(ctx, err) {`,
		new: `	if err != nil {`,
		pkg: "./bitswapcompat", run: `^TestPublishMessage_RefusedForItsCtxEndsNoCall$`,
		why: "a message refused because its ctx ended ends the calls waiting for its blocks",
	},
	{
		id: "c-local-publish-paced", g: "C", file: "bitswapcompat/publish.go",
		old: `	if !remote {
		return // a local block (NotifyNewBlocks, AddBlock): not a peer's copy
	}`,
		new: `	_ = remote`,
		pkg: "./bitswapcompat", run: `^TestPubSub_(LocalPublishIsNotPaced|BlockServiceWalkIsNotPaced)$`,
		why: "a local Publish after a delivering one sleeps out the pacing window",
	},
	{
		id: "c-split-ignores-calls", g: "C", file: "bitswapcompat/sim.go",
		old: `		if sim.n.Wanted(b.Cid()) {`,
		new: `		if sim.n.Interested(b.Cid()) {`,
		pkg: "./bitswapcompat", run: `^TestSIM_SplitCounts(WaitingCalls|CallsQueriesCountSessions)$`,
		why: "SplitWantedUnwanted counts only the sessions' interest, not the PubSub calls waiting for a block",
	},
	{
		id: "c-second-remove-session-returns-early", g: "C", file: "bitswapcompat/sim.go",
		old: `		<-leaving
		return nil`,
		new: `		return nil`,
		pkg: "./bitswapcompat", run: `^TestRemoveSession_SecondWaitsForTheFirst$`,
		why: "a second RemoveSession of a session returns before the first has let go of its keys",
	},
	{
		id: "c-empty-remove-wants-nil", g: "C", file: "bitswapcompat/sim.go",
		old: `		return []cid.Cid{} // boxo's is never nil; a caller may test for it`,
		new: `		return nil`,
		pkg: "./bitswapcompat", run: `^TestSIM_EmptyAnswersAreBoxos$`,
		why: "RemoveSessionWants answers nil where boxo's answers an empty slice",
	},
	{
		id: "c-empty-interested-nil", g: "C", file: "bitswapcompat/sim.go",
		old: `		return []uint64{} // boxo's is never nil; a caller may test for it`,
		new: `		return nil`,
		pkg: "./bitswapcompat", run: `^TestSIM_EmptyAnswersAreBoxos$`,
		why: "InterestedSessions answers nil where boxo's answers an empty slice",
	},
	{
		id: "c-large-call-counts-duplicates", g: "C", file: "bitswapcompat/pubsub.go",
		old: `			if _, dup := c.left.set[k]; dup {
				continue
			}`,
		new: `			if _, dup := c.left.set[k]; dup && false {
				continue
			}`,
		pkg: "./bitswapcompat", run: `^TestPubSub_CallsOfEverySize$`,
		why: "a Subscribe of many keys with one named twice waits for that key twice: its channel is never closed",
	},
	{
		id: "c-small-call-counts-duplicates", g: "C", file: "bitswapcompat/pubsub.go",
		old: `		case slices.Contains(c.keys, k):
			continue`,
		new: `		case slices.Contains(c.keys, k) && false:
			continue`,
		pkg: "./bitswapcompat", run: `^TestPubSub_DeliversEachKeyOnceThenCloses$`,
		why: "a Subscribe of a few keys with one named twice waits for that key twice: its channel is never closed",
	},
	{
		id: "c-context-not-watched", g: "C", file: "bitswapcompat/pubsub.go",
		old: `	if ctx.Done() == nil {
		return
	}
	c.mu.Lock()
	ended := c.ended`,
		new: `	if ctx.Done() != nil || true {
		return
	}
	c.mu.Lock()
	ended := c.ended`,
		pkg: "./bitswapcompat", run: `^TestPubSub_ContextDoneClosesChannel$`,
		why: "a call whose context ends stays open, and in the Notifier, until its blocks come or Shutdown",
	},
	{
		id: "c-completed-call-keeps-request", g: "C", file: "bitswapcompat/pubsub.go",
		old: `	if c.ended {
		c.mu.Unlock()
		ps.log.settle(c.epoch)
		c.sub.Remove()
		return false
	}`,
		new: `	if c.ended {
		c.mu.Unlock()
		ps.log.settle(c.epoch)
		return false
	}`,
		pkg: "./bitswapcompat", run: `^TestTrack_`,
		why: "a call that its own Subscribe completed (the blocks were stored) leaves its request in the Notifier",
	},
	{
		id: "c-fetch-hit-unwrapped", g: "C", file: "bitswapcompat/pubsub.go",
		old: `		ch <- ps.wrapBlock(blk, "", start) // as deliver hands a block that Subscribe found`,
		new: `		ch <- blk // as deliver hands a block that Subscribe found`,
		pkg: "./bitswapcompat", run: `^TestFetch_StoredBlockIsWrapped$`,
		why: "a one-key Subscribe of a stored block hands it over without the BlockWrapper that every other path applies",
	},
	{
		id: "c-arrive-before-wrapper", g: "C", file: "bitswapcompat/pubsub.go",
		old: `		wb := c.ps.wrapBlock(b, m.From, c.start)
		c.arrive(k, bit)`,
		new: `		c.arrive(k, bit)
		wb := c.ps.wrapBlock(b, m.From, c.start)`,
		pkg: "./bitswapcompat", run: `^TestPublish_PanickingWrapperDoesNotCompleteTheCall$`,
		why: "a block whose wrapper panicked counts as arrived, so the delivery of the call's other keys closes the channel without it",
	},
	{
		id: "c-end-closes-before-remove", g: "C", file: "bitswapcompat/end.go",
		old: `	if stop != nil {
		stop()
	}
	if c.sub != nil {
		c.sub.Remove()
	}
}`,
		new: `	if stop != nil {
		stop()
	}
	close(c.ch)
	c.ch = make(chan blocks.Block)
	if c.sub != nil {
		c.sub.Remove()
	}
}`,
		pkg: "./bitswapcompat", run: `^TestPubSub_ContextEndClosesTheChannelOnceTheCallHasLeft$`,
		why: "a call ended early closes its channel before its request leaves the Notifier: a reader that sees the channel closed still finds the call's wants",
	},
	{
		id: "c-interested-sessions-repeat", g: "C", file: "bitswapcompat/sim.go",
		old: `	slices.Sort(ids)
	return slices.Compact(ids)`,
		new: `	slices.Sort(ids)
	return ids`,
		pkg: "./bitswapcompat", run: `^TestSIM_InterestedSessionsEachOnce$`,
		why: "InterestedSessions names a session once per key it wants, where boxo's names it once: the fork counts it as several",
	},
	{
		id: "c-filtered-sets-share-capacity", g: "C", file: "bitswapcompat/sim.go",
		old: `			res[i] = wanted[from:next:next]`,
		new: `			res[i] = wanted[from:next]`,
		pkg: "./bitswapcompat", run: `^TestSIM_FilteredSetsAreApart$`,
		why: "FilterSessionInterested returns sets that share one array: appending to one overwrites the next, where boxo's are apart",
	},
	{
		id: "c-cancels-sent-twice", g: "C", file: "bitswapcompat/sim.go",
		old: `	if sim.cancelsSent {
		return nil
	}`,
		new: `	if sim.cancelsSent && false {
		return nil
	}`,
		pkg: "./bitswapcompat", run: `^TestSIM_WithCancelFunc$|^TestNew_NotifierCancelFuncReportsEachKeyOnce$`,
		why: "with a cancel function, RemoveSession and RemoveSessionWants return the keys it already got: the fork sends each CANCEL twice",
	},
	{
		id: "c-empty-publish-skips-reap", g: "C", file: "bitswapcompat/publish.go",
		old: `		ps.reap() // as every call does: a call that a native operation completed is removed
		return`,
		new: `		return`,
		pkg: "./bitswapcompat", run: `^TestTrack_NativelyCompletedCallIsRemovedByAnyNextCall$`,
		why: "a Publish without blocks leaves the request of a call that a native operation completed in the Notifier",
	},
	{
		id: "c-empty-subscribe-skips-reap", g: "C", file: "bitswapcompat/pubsub.go",
		old: `	defer ps.reap()
	ch := make(chan blocks.Block, len(keys))
	if len(keys) == 0 {
		close(ch)
		return ch
	}`,
		new: `	ch := make(chan blocks.Block, len(keys))
	if len(keys) == 0 {
		close(ch)
		return ch
	}
	defer ps.reap()`,
		pkg: "./bitswapcompat", run: `^TestTrack_NativelyCompletedCallIsRemovedByAnyNextCall$`,
		why: "a Subscribe without keys leaves the request of a call that a native operation completed in the Notifier",
	},
	{
		id: "obs-gauge-refresh-once", g: "obs", file: "metrics.go",
		old: `	for m.dirty.Load() && m.mu.TryLock() {`,
		new: `	if m.dirty.Load() && m.mu.TryLock() {`,
		pkg: ".", run: `^TestMetrics_RefreshThatFindsAnotherUnderWayIsTakenUp$`,
		why: "a gauge refresh that finds another refresh under way leaves its change for later, and after the last operation the gauges disagree with Stats",
	},
	{
		id: "obs-fetch-hit-not-delivered", g: "obs", file: "fetch.go",
		old: `		p.end(opSubscribe, 1, 1, 0) // observe.go hook`,
		new: `		p.end(opSubscribe, 1, 0, 0) // observe.go hook`,
		pkg: ".", run: `^TestMetrics_WorkloadAsPrometheusShowsIt$`,
		why: "a block that Fetch returns is not counted as delivered, as the counter's help says it is",
	},
	{
		id: "obs-general-subscribe-logs-wrapped-error", g: "obs", file: "subscription_want.go",
		old: `	o.probe.storeDone(ctx, t, 0, failure) // observe.go hook: the store's own error, as on every path`,
		new: `	if failure != nil {
		o.probe.storeDone(ctx, t, 0, checkError(k, failure))
	} else {
		o.probe.storeDone(ctx, t, 0, failure)
	}`,
		pkg: ".", run: `^TestLog_StoreTimeoutIsABlockstoreError$`,
		why: "a Subscribe of several keys logs and traces the blockstore's error wrapped in its own message, unlike every other path",
	},
	{
		id: "obs-store-timeout-not-an-error", g: "obs", file: "observe.go",
		old: `	return ctx.Err() != nil && (errors.Is(err, ctx.Err()) || errors.Is(err, context.Cause(ctx)))`,
		new: `	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)`,
		pkg: ".", run: `^TestLog_StoreTimeoutIsABlockstoreError$`,
		why: "a store's own timeout is taken for a cancelled call: not logged nor counted as a blockstore error",
	},
	// Code that a test already caught but no entry named, found by a hunt
	// for such code: the queries (Wants, AppendWanted, Interested,
	// AppendInterested), Release of an interest subscription, Stats, the
	// session IDs of the two kinds, DontHaves' validation, the backlog's
	// pop, carryon.Each, bitswapcompat's pacing, and the wake-ups of G11's
	// waits.
	{
		id: "api-interest-release-waits-for-ordinary", g: "API", file: "subscription_release.go",
		old: `	if last || (kindLast && s.keeps) {`,
		new: `	if last || (kindLast && s.keeps && last) {`,
		pkg: ".", run: `^TestRelease_InterestReturnsKeysNoInterestHolds$`,
		why: "an interest subscription's Release returns a key only once nobody wants it, not once no interest subscription does",
	},
	{
		id: "api-appendwanted-reports-delivered", g: "API", file: "subscription_want.go",
		old: `		if e := s.keys[k]; e != nil && !e.ended.Load() {`,
		new: `		if e := s.keys[k]; e != nil {`,
		pkg: ".", run: `^TestAppendWanted_AgreesWithWants$`,
		why: "AppendWanted reports a key whose block was delivered (a stale entry) as still wanted",
	},
	{
		id: "api-interested-counts-ordinary-wants", g: "API", file: "notifier.go",
		old: `		n.read(k, func(idx *shardIndex) { held = idx.held[k] != nil })`,
		new: `		n.read(k, func(idx *shardIndex) { held = idx.wanted(k) })`,
		pkg: ".", run: `^TestInterestCancel_OnlyWhenLastWantOfAnyKindEnds$`,
		why: "Interested reports a key that only an ordinary subscription wants",
	},
	{
		id: "api-appendinterested-first-only", g: "API", file: "notifier.go",
		old: `			for _, s := range e.subs {
				ids = append(ids, s.id)`,
		new: `			for _, s := range e.subs[:1] {
				ids = append(ids, s.id)`,
		pkg: ".", run: `^TestInterestQueries_Answers$`,
		why: "AppendInterested returns only one of the interest subscriptions that hold a key",
	},
	{
		id: "g8-stats-counts-lazily-closed", g: "G8", file: "notifier.go",
		old: `			st.Subscriptions -= int(c / oneLoose) // closed lazily by Close (see enlist)`,
		new: `			_ = 0 // closed lazily by Close (see enlist)`,
		pkg: ".", run: `^TestClose_RefreshesTheSubscriptionsGauge$`,
		why: "Stats after Close counts subscriptions that Close ended lazily as live",
	},
	{
		id: "g9-donthaves-checked-first-only", g: "G9", file: "response.go",
		old: `	return validateKeys("DontHaves", m.DontHaves)`,
		new: `	return validateKeys("DontHaves", m.DontHaves[:min(len(m.DontHaves), 1)])`,
		pkg: ".", run: `^TestBadInput_UndefinedCidAnywhereIsRefused$`,
		why: "an undefined key past the first of DontHaves is not refused",
	},
	{
		id: "api-donthaves-only-message-empty", g: "API", file: "response.go",
		old: `	return len(m.Blocks) == 0 && len(m.Haves) == 0 && len(m.DontHaves) == 0`,
		new: `	return len(m.Blocks) == 0 && len(m.Haves) == 0`,
		pkg: ".", run: `^TestPublish_HavesDoNotEndTheWant$`,
		why: "a message of DontHaves only is taken for empty and reaches nobody",
	},
	{
		id: "g8-backlog-pop-keeps-message", g: "G8", file: "internal/fifo/fifo.go",
		old: `	q.buf[q.head] = zero // let the GC take what the consumer no longer needs`,
		new: `	_ = zero // let the GC take what the consumer no longer needs`,
		pkg: "./internal/fifo", run: `^TestQueue_HoldsOnlyWhatIsQueued$`,
		why: "a popped message stays reachable from the backlog's array until it is overwritten",
	},
	{
		id: "g7-each-stops-at-a-panic", g: "G7", file: "internal/carryon/carryon.go",
		old: `		if !finished {
			Each(items, f, after)`,
		new: `		if !finished && len(items) < 0 {
			Each(items, f, after)`,
		pkg: "./internal/carryon", run: `^TestEach_CarriesOnAfterPanics$`,
		why: "Each stops at the first f that panics: the items after it and after are skipped",
	},
	{
		id: "c-pace-window-not-moved", g: "C", file: "bitswapcompat/publish.go",
		old: `		ps.handed.Store(int64(time.Since(ps.epoch)))
		if p := ps.paced.Load(); p != nil && !isClosed(*p) {
			return // the last pace goroutine has not run yet: a copy waits for it, then for the window from now
		}`,
		new: `		if p := ps.paced.Load(); p != nil && !isClosed(*p) {
			return // the last pace goroutine has not run yet: a copy waits for it, then for the window from now
		}
		ps.handed.Store(int64(time.Since(ps.epoch)))`,
		pkg: "./bitswapcompat", run: `^TestPubSub_PublishOfACopyIsPaced$`,
		why: "a Publish that hands a block while the last pace goroutine has not run does not move the window: a copy of its block sleeps too little",
	},
	{
		id: "c-publish-after-shutdown-reports", g: "C", file: "bitswapcompat/publish.go",
		old: `	if errors.Is(err, notifier.ErrClosed) {
		return // shut down`,
		new: `	if errors.Is(err, notifier.ErrClosed) && from == "" {
		return // shut down`,
		pkg: "./bitswapcompat", run: `^TestPubSub_PublishAfterShutdownIsNotPaced$`,
		why: "a peer's Publish after Shutdown goes to WithErrorFunc with ErrClosed and is paced, where it must do nothing",
	},
	{
		id: "g8-keys-counted-per-kind", g: "G8", file: "interest_index.go",
		old: `		if !x.wanted(k) {
			x.keys.Add(1)
		}`,
		new: `		if x.lookupFor(k, s) == nil {
			x.keys.Add(1)
		}`,
		pkg: ".", run: `^TestInterest_WantSurvivesDelivery$`,
		why: "a key wanted by an interest subscription and an ordinary one counts twice in Stats.Keys",
	},
	{
		id: "g11-release-wakes-no-close", g: "G11", file: "subscription_release.go",
		old: `	x.wakeStaleMarks(k, s, o)`,
		new: `	_ = x`,
		pkg: ".", run: `^TestIO_CloseWakesWhenItsOwnWantEnds$`,
		why: "an Unsubscribe or close that ends s's want of k leaves s's waiting close asleep behind another operation's stalled blockstore call on k",
	},
	{
		id: "g11-want-begun-wakes-no-subscribe", g: "G11", file: "interest_index.go",
		old: `	x.pairs.Add(1)
	x.wakeSubscribes(k, s, by)`,
		new: `	x.pairs.Add(1)`,
		pkg: ".", run: `^TestOverflow_PendingEndGoesOnWhenItsClaimantsMarkStopsHolding$`,
		why: "a want that s begins leaves s's Subscribes that wait on that key asleep behind another operation's stalled blockstore call",
	},
	{
		id: "api-wants-any-subscription", g: "API", file: "subscription_want.go",
		old: `			in = s.inInterest(e, k)`,
		new: `			in = len(e.subs) > 0`,
		pkg: ".", run: `^TestInterestQueries_Answers$`,
		why: "Wants reports true for a key that another subscription of s's kind wants",
	},
	{
		id: "g9-duplicate-session-across-kinds", g: "G9", file: "notifier.go",
		old: `	if _, dup := n.sessions[s.id]; dup {`,
		new: `	if old, dup := n.sessions[s.id]; dup && old.keeps == s.keeps {`,
		pkg: ".", run: `^TestInterest_SharesSessionIDs$`,
		why: "an interest subscription may take the session ID of a live ordinary subscription, or the reverse",
	},
	{
		id: "g5-one-key-hit-of-interest-unlocked", g: "G5", file: "shard_read.go",
		old: `	return sh, x.idx.version(k), x.idx.held[k] != nil, true // alone: nobody in wants`,
		new: `	return sh, x.idx.version(k), false, true // alone: nobody in wants`,
		pkg: ".", run: `^TestSubscribeOne_HitWaitsForTheCancelOfAnInterestsClose$`,
		why: "a one-key Subscribe that finds a block an interest subscription wants commits under s.mu alone: it may return before the cancel function of that interest's close reports the key",
	},
	{
		id: "api-release-reports-interest-held-key", g: "API", file: "subscription_release.go",
		old: `	if last || (kindLast && s.keeps) {`,
		new: `	if last || kindLast {`,
		pkg: ".", run: `^TestRelease_NormalReturnsKeysNobodyWants$`,
		why: "an ordinary subscription's Release returns a key that an interest subscription still wants, which the cancel function does not get",
	},
	{
		id: "g8-removed-request-stays-listed", g: "G8", file: "subscription_end.go",
		old: `	if !s.anon || s.listed {`,
		new: `	if !s.anon {`,
		pkg: ".", run: `^TestFetch_MissReturnsARequestThatWantsTheKey$`,
		why: "a request that recorded a want stays in the registry after its Remove: Stats counts it, and Close ends it again",
	},
	// WithFailedCheckAsMiss (checkmiss_test.go) and bitswapcompat's use of it.
	{
		id: "api-checkmiss-one-key-fails", g: "API", file: "shard_read.go",
		old: `	if n.takesMiss(ctx, err) {`,
		new: `	if n.takesMiss(ctx, err) && p.taken != nil {`,
		pkg: ".", run: `^TestFailedCheckAsMiss_(SubscribeWantsTheKey|FetchReturnsTheRequest)$`,
		why: "with WithFailedCheckAsMiss, a failed Get of a one-key Subscribe or of Fetch alone still fails the call",
	},
	{
		id: "api-checkmiss-stops-at-the-failure", g: "API", file: "check.go",
		old: `		case !n.takesMiss(ctx, err):`,
		new: `		case true:`,
		pkg: ".", run: `^TestFailedCheckAsMiss_SubscribeWantsTheKey$`,
		why: "a Subscribe that takes a failed Get for a miss checks none of the keys after it: a stored block among them is wanted instead of handed",
	},
	{
		id: "api-checkmiss-ctx-end-taken", g: "API", file: "check.go",
		old: `	return err != nil && n.cfg.checkMiss && !endedBy(ctx, err)`,
		new: `	return err != nil && n.cfg.checkMiss`,
		pkg: ".", run: `^TestFailedCheckAsMiss_CtxEndIsNoMiss$`,
		why: "a Get that the call's own ctx ended is taken for a miss: the cancelled call records a want and returns nil",
	},
	{
		id: "api-checkmiss-func-under-reservation", g: "API", file: "check.go",
		old: `			o.probe.taken = checkError(h.key, err)`,
		new: `			o.probe.taken = checkError(h.key, err)
			n.cfg.checkErr(o.probe.taken)`,
		pkg: ".", run: `^TestFailedCheckAsMiss_FuncHoldsNothing$`,
		why: "the function of WithFailedCheckAsMiss runs where the Get failed, with the call's keys reserved: its own Subscribe of the key waits for ever",
	},
	{
		id: "api-checkmiss-panicking-fetch-keeps-request", g: "API", file: "check.go",
		old: `		if !passed && req != nil {`,
		new: `		if !passed && req != nil && err == nil {`,
		pkg: ".", run: `^TestFailedCheckAsMiss_PanickingFunc$`,
		why: "a Fetch whose error function panics leaves the request it made, which its caller never got, in the Notifier",
	},
	{
		id: "c-failed-check-ends-the-call", g: "C", file: "bitswapcompat/pubsub.go",
		old: `	if bs != nil {
		// boxo's GetBlocks`,
		new: `	if bs == nil {
		// boxo's GetBlocks`,
		pkg: "./bitswapcompat", run: `^TestPubSub_BlockstoreErrors$`,
		why: "a failed check in bitswapcompat's Subscribe closes the call's channel, where boxo's GetBlocks takes it for a miss",
	},
	{
		id: "api-checkmiss-start-over-keeps-failure", g: "API", file: "subscription_want.go",
		old: `	o.probe.forgetFailure()
`,
		new: ``,
		pkg: ".", run: `^TestFailedCheckAsMiss_StartOver`,
		why: "a failure that an attempt took for a miss before it started over reaches the error function and the metrics, though the call's last attempt made the Get again or needed none",
	},
	{
		id: "obs-checkmiss-failure-hidden-by-ctx", g: "obs", file: "subscription_want.go",
		old: `	if o.probe.taken != nil { // the store's failure`,
		new: `	if o.probe.taken != nil && err == nil { // the store's failure`,
		pkg: ".", run: `^TestFailedCheckAsMiss_LaterCtxEndKeepsTheFailureCounted$`,
		why: "a failure taken for a miss goes unlogged and uncounted when the call's ctx ends a later Get of the call",
	},
	{
		id: "c-failed-store-spares-a-call-listed-after", g: "C", file: "bitswapcompat/pubsub.go",
		old: `		missed = c.missedFailure()`,
		new: `		missed = c.missedFailure() && c.seq == 0`,
		pkg: "./bitswapcompat", run: `^TestPubSub_FailedStoreEndsACallListedAfterIt$`,
		why: "a call whose Subscribe began before a Publish whose store failed, listed after that Publish ended the waiting calls, is spared and waits for a block that no peer sends again",
	},
	{
		id: "c-failed-store-not-logged-for-unlisted-calls", g: "C", file: "bitswapcompat/end.go",
		old: `	if ps.log.underWay() {`,
		new: `	if !ps.log.underWay() {`,
		pkg: "./bitswapcompat", run: `^TestPubSub_FailedStoreEndsACallListedAfterIt$`,
		why: "a failed store is not logged for the calls whose Subscribe is under way, which then never learn of it",
	},
	{
		id: "c-failure-log-outlives-its-calls", g: "C", file: "bitswapcompat/faillog.go",
		old: `		l.keys = [2]map[cid.Cid]uint64{}`,
		new: `		_ = l.keys`,
		pkg: "./bitswapcompat", run: `^TestPubSub_FailureLogIsBounded$`,
		why: "the log of failed stores for calls still subscribing outlives them once no Subscribe is under way",
	},
	{
		id: "c-failure-log-never-moves-on", g: "C", file: "bitswapcompat/faillog.go",
		old: `		l.keys[(e+1)&1] = nil
		l.epoch.Store(e + 1)`,
		new: `		_ = e`,
		pkg: "./bitswapcompat", run: `^TestPubSub_FailureLogIsBoundedUnderOverlappingSubscribes$`,
		why: "the log of failed stores keeps every epoch's entries: under Subscribes that keep overlapping it grows by every key whose store fails",
	},
	{
		id: "c-one-key-call-placed-after-its-check", g: "C", file: "bitswapcompat/pubsub.go",
		old: `seq: seq, epoch: epoch}`,
		new: `seq: max(seq, ps.log.begun.Add(1)), epoch: epoch}`,
		pkg: "./bitswapcompat", run: `^TestPubSub_FailedStoreEndsAOneKeyCallWhoseCheckBeganBefore$`,
		why: "a one-key call takes its place among the calls after Fetch's check: a Publish that failed to store its key during that check spares it, and it waits until its ctx ends",
	},
}
