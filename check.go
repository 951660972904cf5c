package notifier

import (
	"context"
	"errors"
	"fmt"

	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	format "github.com/ipfs/go-ipld-format"
)

// This file holds the blockstore check of Subscribe's general path, and
// WithFailedCheckAsMiss's part of Subscribe and Fetch: which failures of a
// check are taken for a miss, and the hand-over of the failure to the
// option's function once the call has taken effect.

// takesMiss reports whether err, the failure of a Get of a call under ctx,
// is to be taken for a miss (WithFailedCheckAsMiss). The call's own ctx
// ending is never a miss: the call ends.
func (n *Notifier) takesMiss(ctx context.Context, err error) bool {
	return err != nil && n.cfg.checkMiss && !endedBy(ctx, err)
}

// checkError is the error of a failed Get of key k in a call's blockstore
// check.
func checkError(k cid.Cid, err error) error {
	return fmt.Errorf("notifier: subscribe: check blockstore for %s: %w", k, err)
}

// passTaken hands the failure that p took for a miss, if any, to the
// function of WithFailedCheckAsMiss, once the call has taken effect. req,
// if not nil, is the request that Fetch made and is about to return: a
// panic of the function removes it, as nobody else could. It is small
// enough to be inlined: a call that took no failure pays one check.
func (n *Notifier) passTaken(p *probe, req *Subscription) {
	if p.taken != nil && n.cfg.checkErr != nil {
		n.handTaken(p.taken, req)
	}
}

// handTaken is passTaken's hand-over of err.
func (n *Notifier) handTaken(err error, req *Subscription) {
	passed := false
	defer func() {
		if !passed && req != nil {
			req.Remove()
		}
	}()
	n.cfg.checkErr(err)
	passed = true
}

// get fills in the blocks of the candidates that the blockstore has. On a
// failure it returns the key and the store's error, unwrapped. A failure
// that the Notifier takes for a miss (takesMiss) does not stop it: the first
// one goes to o.probe.taken, wrapped.
func (s *Subscription) get(ctx context.Context, o *op) (cid.Cid, error) {
	n := s.n
	for i := range o.hits {
		h := &o.hits[i]
		blk, err := n.bs.Get(ctx, h.key)
		switch {
		case err == nil:
			h.blk = blk
		case isNotFound(err):
		case !n.takesMiss(ctx, err):
			return h.key, err
		case o.probe.taken == nil:
			o.probe.taken = checkError(h.key, err)
		}
	}
	return cid.Undef, nil
}

func isNotFound(err error) bool {
	return format.IsNotFound(err) || errors.Is(err, datastore.ErrNotFound)
}
